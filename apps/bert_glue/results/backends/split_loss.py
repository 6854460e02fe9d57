"""The validation MLM loss of a fairseq pretraining run, split by target: the <s>/</s> tokens
fairseq's masked_lm also masks and scores, and every other token (the only ones the
transformers backend masks). Evidence for README section 5.3.

    python apps/bert_glue/results/backends/split_loss.py RUN_DIR DATA_DIR
"""

import sys
from pathlib import Path

import adan_bert.fairseq_plugin  # noqa: F401 - loads fairseq checkpoints under safe loading
import torch
import torch.nn.functional as F
from fairseq import checkpoint_utils


def main(run: Path, data: Path) -> None:
    ckpt = run / "final" / "checkpoint.pt"
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(ckpt)], arg_overrides={"data": str(data)}
    )
    model = models[0].eval()
    task.load_dataset("valid", epoch=1)
    d = task.source_dictionary
    batches = task.get_batch_iterator(
        task.dataset("valid"),
        max_sentences=16,
        max_positions=model.max_positions(),
        ignore_invalid_inputs=True,
        seed=cfg.common.seed,
        epoch=1,
    ).next_epoch_itr(shuffle=False)
    sums = {"special": [0.0, 0], "other": [0.0, 0]}
    with torch.no_grad():
        for sample in batches:
            masked = sample["target"].ne(d.pad())
            logits = model(**sample["net_input"], masked_tokens=masked)[0]
            target = sample["target"][masked]
            nll = F.cross_entropy(logits.float(), target, reduction="none")
            special = (target == d.bos()) | (target == d.eos())
            for name, pick in (("special", special), ("other", ~special)):
                sums[name][0] += float(nll[pick].sum())
                sums[name][1] += int(pick.sum())
    total = sum(s for s, _ in sums.values()) / sum(n for _, n in sums.values())
    print(
        f"{run}: all masked targets {total:.4f} nats over {sum(n for _, n in sums.values())} tokens"
    )
    count = sum(n for _, n in sums.values())
    for name, (s, n) in sums.items():
        print(f"  {name:8s} {s / n:.4f} nats over {n} tokens ({n / count:.1%})")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
