"""Exchange: direction libraries (``.p2pz``, :mod:`.archive` with the format in :mod:`.manifest`) and the
official pix2pix-zero ``.pt`` concept embeddings (:mod:`.pt`)."""

from .archive import export_library, import_library, read_archive
from .manifest import FORMAT, FORMAT_VERSION, Manifest, check_tensors, validate, validate_manifest
from .pt import import_pt, load_pt_embedding

__all__ = ["FORMAT", "FORMAT_VERSION", "Manifest", "check_tensors", "export_library", "import_library", "import_pt",
           "load_pt_embedding", "read_archive", "validate", "validate_manifest"]
