"""Where fairseq finds the ``adan`` plugin: :data:`USER_DIR`, for ``--user-dir`` or
``common.user_dir`` (``python -m adan_bert.fairseq_plugin`` prints it).

Importing this package also registers the plugin, for code that builds fairseq objects in
this process (the tests, :mod:`adan_bert.fairseq_dryrun`).
"""

from adan_bert.fairseq_adan import USER_DIR, allow_checkpoint_globals, register

__all__ = ["USER_DIR", "FairseqAdan"]

FairseqAdan = register()
allow_checkpoint_globals()
