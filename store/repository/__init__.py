"""Repository functions: every read and content-addressed, versioned insert of the registry's records.

Each function takes an open :class:`~sqlalchemy.orm.Session` (one transaction, opened by the caller with
``Database.read()`` / ``Database.write()``) and works on plain values, so build, combine and import share one
implementation of each rule:

* **content addressing** — a bank is identified by (concept, sha256 of its sentences), an embedding by
  (bank, encoder), a direction by (name, :func:`direction_content`'s hash). Inserting what exists returns the
  stored row instead of a new version;
* **versions** — 1, 2, … per bank concept and per direction name, unique and gap-free under concurrent
  writers (:func:`lock`);
* **the generation counter** — grows with every change that affects search, so search indexes know when they
  are stale.

User-facing problems (an unknown name, a missing version) raise :class:`NotFoundError`, a
:class:`~store.db.StoreError` with a one-line message naming the fix.

One module per record type (:mod:`.encoders`, :mod:`.banks`, :mod:`.embeddings`, :mod:`.directions`,
:mod:`.listings`, :mod:`.evaluations`, :mod:`.students`, :mod:`.jobs`; shared pieces in :mod:`.core`); this
package re-exports them, so callers write ``repository.insert_bank`` whatever module holds it. :mod:`.integrity`
(``p2pz db check``) is maintenance, imported by its own name.
"""

from .core import MAX_NESTING, NotFoundError, bump_generation, generation, lock
from .encoders import (ENCODER_FIELDS, IDENTITY_FIELDS, check_shape, encoder_by_fingerprint, encoder_facts,
                       encoder_mismatch, encoder_row, encoders, tensor_shape)
from .banks import (MAX_BANK_SENTENCES, bank_by_sha, bank_row, bank_sentence_page, banks, check_bank_size, insert_bank,
                    latest_bank)
from .embeddings import embedding_key, embedding_token, fill_token_mean, find_embedding, insert_embedding, shared_encoder
from .directions import (InsertedDirection, direction_by_content, direction_content, direction_key_bytes, direction_row,
                         direction_token_vector, direction_vector, index_keys, insert_direction, insert_directions)
from .listings import DirectionListing, SORTS, list_directions, page_directions
from .evaluations import LOWER_IS_BETTER, METRICS, insert_evaluation, latest_scores
from .students import insert_student, student_row, student_weight_bytes, students
from .jobs import (JOB_STATES, claim_next_job, count_jobs, fail_interrupted_jobs, finished_jobs_to_clean,
                   heartbeat_job, insert_job, job_row, jobs, requeue_stale_jobs, update_job)

__all__ = ["count_jobs", "finished_jobs_to_clean", "MAX_NESTING", "NotFoundError", "bump_generation", "generation", "lock", "ENCODER_FIELDS",
           "IDENTITY_FIELDS", "check_shape", "encoder_mismatch", "tensor_shape", "encoder_by_fingerprint", "encoder_facts", "encoder_row", "encoders", "bank_by_sha", "bank_row", "banks", "MAX_BANK_SENTENCES", "bank_sentence_page", "check_bank_size",
           "insert_bank", "latest_bank", "embedding_key", "embedding_token", "fill_token_mean", "find_embedding", "insert_embedding", "shared_encoder",
           "InsertedDirection", "direction_by_content", "direction_content", "direction_key_bytes", "direction_row",
           "direction_token_vector", "direction_vector", "index_keys", "insert_direction", "insert_directions", "DirectionListing", "SORTS",
           "list_directions", "page_directions", "LOWER_IS_BETTER", "METRICS", "insert_evaluation", "latest_scores",
           "insert_student", "student_row", "student_weight_bytes", "students", "JOB_STATES", "claim_next_job",
           "fail_interrupted_jobs", "heartbeat_job", "insert_job", "job_row", "jobs", "requeue_stale_jobs",
           "update_job"]
