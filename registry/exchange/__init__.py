"""Exchange: direction libraries (``.p2pz``, :mod:`.archive` with the format in :mod:`.manifest`), the official
pix2pix-zero ``.pt`` concept embeddings (:mod:`.pt`), and sharing: Hub repos (:mod:`.hub`, the card in
:mod:`.card`) and other registries (:mod:`.remote`)."""

from .archive import cached_export, collect_library, export_library, import_library, read_archive, store_libraries, store_library
from .manifest import FORMAT, FORMAT_VERSION, Manifest, check_tensors, validate, validate_manifest
from .pt import import_pt, load_pt_embedding

__all__ = ["FORMAT", "FORMAT_VERSION", "Manifest", "cached_export", "check_tensors", "collect_library", "export_library",
           "store_libraries", "store_library", "import_library", "import_pt",
           "load_pt_embedding", "read_archive", "validate", "validate_manifest"]
