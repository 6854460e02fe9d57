"""Pretraining data: packing, masking, the GPT-2 vocabulary, the cache, download errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from adan_bert import data
from adan_bert.presets import Masking
from conftest import write_corpus


def test_pack_complete_never_mixes_a_document_piece_with_another():
    lengths = [3, 4, 10, 2, 2, 25, 1, 7]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    blocks = data.pack_complete(offsets, capacity=8)
    starts, ends = set(offsets[:-1].tolist()), set(offsets[1:].tolist())
    covered = []
    for a, b in blocks.tolist():
        assert 0 < b - a <= 8
        covered.extend(range(a, b))
        inside = [i for i in range(len(lengths)) if offsets[i] < b and offsets[i + 1] > a]
        if len(inside) > 1:  # several documents: all of them whole
            assert a in starts and b in ends
            assert all(offsets[i] >= a and offsets[i + 1] <= b for i in inside)
    assert covered == list(range(offsets[-1]))  # every token once, in order
    # greedy: 3+4 fit, 10 alone (split 8 + 2), 2+2+... : the whole documents fill blocks
    assert blocks.tolist()[:3] == [[0, 7], [7, 15], [15, 17]]
    # two documents that together overflow a block go to two blocks
    assert data.pack_complete(np.array([0, 5, 10, 13]), 8).tolist() == [[0, 5], [5, 13]]


def test_pack_complete_rejects_a_zero_capacity():
    with pytest.raises(ValueError, match="capacity"):
        data.pack_complete(np.array([0, 3]), 0)


def _masker(vocab=100, specials=(0, 1, 2, 3, 99)):
    return data.Masker(Masking(), vocab, mask_id=99, special_ids=specials)


def test_masking_rates_and_special_tokens():
    m = _masker()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 99, (400, 64))
    ids[:, 0], ids[:, -1] = 0, 2  # <s> ... </s>
    ids[::3, 40:] = 1  # padding in a third of the rows
    inputs, labels = m.mask(ids, g)
    maskable = ~torch.isin(ids, torch.tensor(m.special_ids))
    chosen = labels != -100
    assert not (chosen & ~maskable).any(), "a special token was chosen"
    assert torch.equal(inputs[~maskable], ids[~maskable]), "a special token was changed"
    assert torch.equal(labels[chosen], ids[chosen])
    per_row = chosen.sum(1).float() / maskable.sum(1).float()
    assert abs(per_row.mean().item() - 0.15) < 0.01
    assert (chosen.sum(1) - 0.15 * maskable.sum(1)).abs().max() <= 1  # exact per block
    n = chosen.sum().item()
    to_mask = (inputs == 99) & chosen
    kept = (inputs == ids) & chosen
    to_random = chosen & ~to_mask & ~kept
    assert abs(to_mask.sum().item() / n - 0.8) < 0.03
    assert abs((kept.sum().item() + to_random.sum().item()) / n - 0.2) < 0.03
    assert not torch.isin(inputs[to_random], torch.tensor(m.special_ids)).any()


def test_masked_blocks_are_fixed_per_seed_epoch_and_index():
    tokens = np.arange(4, 60, dtype=np.uint16) % 90 + 4
    blocks = data.BlockDataset(tokens, np.array([[0, 20], [20, 56]]), bos=0)
    a = data.MaskedBlocks(blocks, _masker(), seed=3)
    b = data.MaskedBlocks(blocks, _masker(), seed=3)
    assert torch.equal(a[1]["input_ids"], b[1]["input_ids"])
    assert a[1]["input_ids"][0] == 0  # <s> first, never masked
    a.set_epoch(1)
    assert not torch.equal(a[1]["labels"], b[1]["labels"]), "epochs mask alike"
    fixed = data.MaskedBlocks(blocks, _masker(), seed=0, fixed=True)
    first = fixed[0]["labels"].clone()
    fixed.set_epoch(5)
    assert torch.equal(fixed[0]["labels"], first), "the validation masks moved"


def test_pad_collator_pads_ids_and_labels():
    items = [{"input_ids": torch.tensor([0, 5, 2]), "labels": torch.tensor([-100, 5, -100])},
             {"input_ids": torch.tensor([0, 2]), "labels": torch.tensor([-100, -100])}]  # fmt: skip
    batch = data.PadCollator(pad_id=1)(items)
    assert batch["input_ids"].tolist() == [[0, 5, 2], [0, 2, 1]]
    assert batch["labels"].tolist() == [[-100, 5, -100], [-100, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]


def _fake_bpe(folder: Path) -> Path:
    """GPT-2-style files for a 6-token byte-level vocabulary (ids chosen to differ from the
    frequency order of dict.txt)."""
    folder.mkdir()
    encoder = {"a": 0, "b": 1, "Ġ": 2, "ab": 3, "Ġab": 4, "<|endoftext|>": 5}
    (folder / "encoder.json").write_text(json.dumps(encoder))
    (folder / "vocab.bpe").write_text("#version: 0.2\na b\nĠ ab\n")
    (folder / "dict.txt").write_text("4 100\n3 50\n0 20\n1 10\n2 5\n5 1\nmadeupword0000 0\n")
    return folder


def test_gpt2_vocab_follows_fairseq_dictionary_order(tmp_path):
    vocab, merges = data.gpt2_vocab(_fake_bpe(tmp_path / "bpe"))
    assert [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])] == [
        "<s>", "<pad>", "</s>", "<unk>", "Ġab", "ab", "a", "b", "Ġ", "<|endoftext|>",
        "madeupword0000", "<mask>",
    ]  # fmt: skip
    assert merges == [("a", "b"), ("Ġ", "ab")]
    tok = data.gpt2_tokenizer(tmp_path / "bpe")
    assert tok("ab ab")["input_ids"] == [0, 5, 4, 2]  # <s> ab Ġab </s>


def test_gpt2_files_missing_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="encoder.json"):
        data.gpt2_vocab(tmp_path)


def test_download_offline_says_what_to_do(tmp_path, monkeypatch):
    def offline(url, dest, log):
        raise data.DownloadError(url, "no network")

    monkeypatch.setattr(data, "fetch", offline)
    with pytest.raises(data.DownloadError, match="--bpe-dir"):
        data.download_gpt2_bpe(tmp_path / "bpe", log=lambda m: None)
    assert not list((tmp_path / "bpe").iterdir()), "a partial file was left behind"


def test_download_checks_the_md5(tmp_path, monkeypatch):
    def wrong(url, dest, log):
        Path(dest).write_text("not the file")
        return "0" * 32

    monkeypatch.setattr(data, "fetch", wrong)
    with pytest.raises(ValueError, match="MD5"):
        data.download_gpt2_bpe(tmp_path / "bpe", log=lambda m: None)
    assert not (tmp_path / "bpe" / "encoder.json").exists()


def test_prepare_caches_and_splits_documents(tmp_path):
    corpus = write_corpus(tmp_path / "c")
    logs = []
    p = data.prepare(corpus, "trained", 300, 32, 0.1, tmp_path / "cache", log=logs.append)
    assert any("preparing" in m for m in logs)
    info = json.loads((p.folder / "prepared.json").read_text())
    assert info["valid"]["documents"] == round(info["documents"] * 0.1)
    assert info["train"]["documents"] + info["valid"]["documents"] == info["documents"]
    assert isinstance(p.train.tokens, np.memmap)  # mapped, not loaded per process
    assert all(len(p.train[i]["input_ids"]) <= 32 for i in range(len(p.train)))
    logs.clear()
    again = data.prepare(corpus, "trained", 300, 32, 0.1, tmp_path / "cache", log=logs.append)
    assert again.folder == p.folder and not logs, "the cache was rebuilt"
    other = data.prepare(corpus, "trained", 300, 16, 0.1, tmp_path / "cache", log=logs.append)
    assert other.folder != p.folder


def test_corpus_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="--corpus"):
        data.read_documents(tmp_path / "none.txt")
    (tmp_path / "small.txt").write_text("one\ntwo\n")
    with pytest.raises(ValueError, match="at least 10"):
        data.read_documents(tmp_path / "small.txt")


def test_glue_corpus_uses_training_sentences_only(tmp_path):
    from conftest import write_glue

    glue = write_glue(tmp_path / "glue")
    (glue / "CoLA" / "dev.tsv").write_text("x\t1\t\tDEVSENTENCE only here\n")
    out = data.write_glue_corpus(glue, tmp_path / "c" / "corpus.txt")
    text = out.read_text()
    assert "DEVSENTENCE" not in text
    lines = text.splitlines()
    assert len(lines) == len(set(lines)) > 40
    with pytest.raises(FileNotFoundError, match="--glue-dir"):
        data.write_glue_corpus(tmp_path / "nothing", tmp_path / "x.txt")
