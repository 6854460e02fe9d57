"""fairseq data preparation: GPT-2 BPE + fairseq-preprocess, the transformers backend's corpus
split, fairseq's GLUE layout with the held-out and paper-scoring splits, reuse and rebuild."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip(
    "fairseq",
    reason="fairseq is not installed: these tests run in the tox env bert-fairseq "
    "(tox -e bert-fairseq), see apps/bert_glue/README.md",
)

import numpy as np  # noqa: E402
from adan_bert import fairseq_data, glue  # noqa: E402
from adan_bert.data import read_documents, split_documents  # noqa: E402
from fairseq.data import Dictionary, data_utils  # noqa: E402


def _split(folder, split, dictionary):
    ds = data_utils.load_indexed_dataset(str(folder / split), dictionary)
    assert ds is not None, f"{folder / split} missing"
    return ds


def test_corpus_uses_the_transformers_split_and_fairseqs_encoding(tiny_data, tmp_path):
    dest = fairseq_data.prepare_corpus(
        tiny_data["corpus"], tiny_data["bpe"], tmp_path / "c", 0.05, log=lambda m: None
    )
    docs = read_documents(tiny_data["corpus"])
    train_idx, valid_idx = split_documents(len(docs), 0.05)
    d = Dictionary.load(str(dest / "dict.txt"))
    encoder = fairseq_data.BpeEncoder(tiny_data["bpe"])
    for split, idx in (("train", train_idx), ("valid", valid_idx)):
        ds = _split(dest, split, d)
        assert len(ds) == len(idx)
        for k in (0, len(idx) - 1):  # each line: the document's GPT-2 ids, then </s>
            assert ds[k][-1] == d.eos()
            assert d.string(ds[k][:-1]) == encoder.line(docs[idx[k]])
    assert d.unk() not in _split(dest, "train", d)[0]


def test_glue_layout_labels_heldout_and_the_papers_cola_scoring(tiny_data, tmp_path):
    out = fairseq_data.prepare_glue(
        tiny_data["glue"],
        ["CoLA", "STS-B", "RTE"],
        tiny_data["bpe"],
        tmp_path / "g",
        0.25,
        log=lambda m: None,
    )
    cola = glue.get_task("CoLA")
    train = glue.read_split(tiny_data["glue"], cola, "train")
    dev = glue.read_split(tiny_data["glue"], cola, "dev")
    keep, held = glue.heldout_split(len(train), 0.25)
    labels = Dictionary.load(str(out["CoLA"] / "label" / "dict.txt"))
    text = Dictionary.load(str(out["CoLA"] / "input0" / "dict.txt"))

    def ids(split):  # label tokens back to class ids (label dict: 4 specials, then "0", "1")
        ds = _split(out["CoLA"] / "label", split, labels)
        return [int(labels[int(x[0])]) for x in ds]

    assert ids("valid") == dev.labels.tolist()
    assert ids("valid1") == dev.labels[1:].tolist()  # dev without its first line
    assert ids("heldout") == train.labels[held].tolist()
    assert ids("train") == train.labels[keep].tolist()
    encoder = fairseq_data.BpeEncoder(tiny_data["bpe"])
    valid1 = _split(out["CoLA"] / "input0", "valid1", text)
    assert text.string(valid1[0][:-1]) == encoder.line(dev.text_a[1])
    assert not (out["CoLA"] / "input1").exists()
    assert (out["RTE"] / "input1" / "valid.bin").is_file()  # pairs get a second input
    assert not (out["RTE"] / "input0" / "valid1.bin").exists()  # the quirk is CoLA's only
    stsb = glue.read_split(tiny_data["glue"], "STS-B", "dev")
    scores = np.loadtxt(out["STS-B"] / "label" / "valid.label")
    np.testing.assert_allclose(scores, stsb.labels / 5.0, rtol=1e-6)


def test_a_prepared_folder_is_reused_until_its_inputs_change(tiny_data, tmp_path):
    corpus = tmp_path / "corpus.txt"
    shutil.copy(tiny_data["corpus"], corpus)
    messages = []
    dest = fairseq_data.prepare_corpus(
        corpus, tiny_data["bpe"], tmp_path / "c", 0.05, log=messages.append
    )
    stamp = (dest / "train.bin").stat().st_mtime_ns
    fairseq_data.prepare_corpus(corpus, tiny_data["bpe"], dest, 0.05, log=messages.append)
    assert "up to date" in messages[-1]
    assert (dest / "train.bin").stat().st_mtime_ns == stamp
    with corpus.open("a") as f:
        f.write("one more document at the end\n")
    fairseq_data.prepare_corpus(corpus, tiny_data["bpe"], dest, 0.05, log=messages.append)
    d = Dictionary.load(str(dest / "dict.txt"))
    n = len(_split(dest, "train", d)) + len(_split(dest, "valid", d))
    assert n == len(read_documents(corpus))
    assert not list(tmp_path.glob(".c.tmp-*")), "a temporary folder was left behind"


def test_missing_bpe_files_are_a_clear_error(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="--bpe-dir"):
        fairseq_data.check_bpe_dir(None)
    (tmp_path / "bpe").mkdir()
    (tmp_path / "bpe" / "encoder.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="vocab.bpe, dict.txt"):
        fairseq_data.prepare_corpus(tiny_data["corpus"], tmp_path / "bpe", tmp_path / "c")
    assert (
        fairseq_data.main(
            [
                "corpus",
                "--corpus",
                str(tiny_data["corpus"]),
                "--bpe-dir",
                str(tmp_path / "bpe"),
                "--out",
                str(tmp_path / "c"),
            ]
        )
        == 2
    )
