"""The folder fairseq's ``--user-dir`` (``common.user_dir``) points at: importing it registers
``--optimizer adan`` (adan-core's Adan) and allow-lists what fairseq checkpoints pickle.

fairseq imports this folder as the top-level module ``adan_fairseq`` after putting its parent
on ``sys.path``; the parent holds nothing else importable, so no other module gets shadowed.
"""

from adan_bert.fairseq_adan import allow_checkpoint_globals, register

FairseqAdan = register()
allow_checkpoint_globals()
