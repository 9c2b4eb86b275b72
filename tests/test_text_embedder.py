import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertModel, BertTokenizerFast

from conftest import RUNNER, mini_config, mini_model
from rporec_recbole.checkpoint import load_config_dict
from rporec_recbole.quick_start import run_recbole_rporec
from rporec_recbole.text_embedder import (
    EMBEDDED_SENTENCE_ENCODER, SentenceEmbedder, TextEmbedderNotFoundError, TokenMeanEmbedder,
    resolve_sentence_encoder,
)
from rporec_recbole.text_encoder import ItemTokenBag, mean_of_sums, split_words

WORDS = ["toy", "story", "star", "wars", "return", "of", "the", "jedi", "red", "lipstick", "matte", "1995", "1977"]


@pytest.fixture(scope="module")
def tiny_sentence_encoder(tmp_path_factory):
    """A random 2-layer BERT with a word-level vocabulary, saved as a folder (what a local text_embedder is)."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(folder)
    return str(folder)


def test_sentence_embedding_is_the_normalised_masked_mean_whatever_the_batch(tiny_sentence_encoder):
    embedder = SentenceEmbedder(tiny_sentence_encoder, batch_size=2)
    texts = ["toy story 1995", "the return of the jedi", "", "star wars 1977", "red matte lipstick", "  "]
    batched = embedder.embed(texts)
    model, tokenizer = embedder.model, embedder.tokenizer
    for text, row in zip(texts, batched):
        if not text.strip():
            assert torch.equal(row, torch.zeros(embedder.dim))  # blank: no text, the zero vector
            continue
        hidden = model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0]
        torch.testing.assert_close(row, F.normalize(hidden.mean(0), dim=0), atol=1e-5, rtol=1e-5)


def test_sentence_embedder_truncates_and_counts_each_nonblank_item_once(tiny_sentence_encoder):
    embedder = SentenceEmbedder(tiny_sentence_encoder)
    long_text = "toy story star wars return of the jedi"
    torch.testing.assert_close(embedder.embed([long_text], max_tokens=4), embedder.embed(["toy story"]))
    sums, counts = embedder.item_sums(["", "toy story", "star wars"])
    assert counts.tolist() == [0.0, 1.0, 1.0]
    torch.testing.assert_close(mean_of_sums(sums[1:].sum(0), counts[1:].sum()), sums[1:].mean(0))


def test_token_mean_embedder_weighs_each_token(tokenizer):
    table = torch.randn(len(tokenizer), 8)
    embedder = TokenMeanEmbedder(table, tokenizer)
    ids = tokenizer("Star Wars (1977)", add_special_tokens=False).input_ids
    sums, counts = embedder.item_sums(["", "Star Wars (1977)"])
    assert counts.tolist() == [0.0, float(len(ids))]
    torch.testing.assert_close(embedder.embed(["Star Wars (1977)"])[0], table[ids].mean(0))


def test_embedded_sentence_encoder_loads_offline_and_puts_sequels_together():
    embedder = SentenceEmbedder(resolve_sentence_encoder(EMBEDDED_SENTENCE_ENCODER))
    star_wars, jedi, lipstick = embedder.embed(["Star Wars (1977)", "Return of the Jedi (1983)",
                                                "Matte red lipstick"])
    assert embedder.dim == 384 and abs(float(star_wars.norm()) - 1) < 1e-5
    assert float(star_wars @ jedi) > float(star_wars @ lipstick) + 0.3


def test_missing_text_embedder_folder_is_one_clear_error(tmp_path):
    with pytest.raises(TextEmbedderNotFoundError, match="is not a folder"):
        resolve_sentence_encoder(str(tmp_path / "absent"))


def test_rporec_with_a_sentence_encoder_pools_the_prompt_from_item_embeddings(mini_movielens, tmp_path,
                                                                              tiny_sentence_encoder):
    _, model, _ = mini_model(mini_movielens, tmp_path, text_embedder=tiny_sentence_encoder)
    model.eval()
    embedder = model.reasoning.embedder
    assert isinstance(embedder, SentenceEmbedder) and model.item_text_table.shape[1] == 32
    torch.testing.assert_close(model.item_text_table[1:4], embedder.embed(model.item_texts[1:4], 32))
    seq = torch.tensor([[1, 2, 3, 0, 0, 0, 0]])
    pooled = model.item_text_table[1:4].mean(0, keepdim=True)  # every item counts once, whatever its length
    with torch.no_grad():
        torch.testing.assert_close(model._prompt_embedding(seq, torch.tensor([3])), model.prompt_encoder(pooled))


def test_rporec_trains_and_evaluates_with_a_sentence_encoder(mini_movielens, tmp_path, tiny_sentence_encoder):
    result = run_recbole_rporec(model="RPORec", dataset="ml-mini", config_dict=mini_config(
        mini_movielens, tmp_path, text_embedder=tiny_sentence_encoder))
    assert all(0.0 <= v <= 1.0 for v in result["test_result"].values())
    assert result["checkpoint"] and load_config_dict(result["checkpoint"])["text_embedder"] == tiny_sentence_encoder


def test_runner_prints_one_clear_line_for_a_missing_text_embedder(tmp_path):
    proc = subprocess.run([sys.executable, RUNNER, "--model=RPORec",
                           "--dataset=ml-100k", "--llm_path=tiny-random", f"--text_embedder={tmp_path / 'absent'}",
                           "--state=WARNING"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: text_embedder='{tmp_path / 'absent'}' is not")
    assert "Traceback" not in proc.stderr


def test_item_token_bag_is_the_mean_of_each_items_token_vectors_and_starts_at_zero():
    """Padding stays out of the mean, a textless item gives zeros, and pooling a few items equals indexing the full
    table; the vocabulary holds only the tokens the item texts use."""
    bag = ItemTokenBag([[], [70, 5], [5], [900, 70, 70]], dim=3)
    assert bag.bag.num_embeddings == 1 + 3 and not bag().any()
    with torch.no_grad():
        bag.bag.weight[1:] = torch.tensor([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 4.0]])  # tokens 5, 70, 900 (sorted)
    table = bag()
    expected = torch.tensor([[0, 0, 0], [0.5, 1, 0], [1, 0, 0], [0, 4 / 3, 4 / 3]])
    assert torch.allclose(table, expected)
    items = torch.tensor([[3, 0], [1, 1]])
    assert torch.equal(bag(items), table[items])
    bag(items).sum().backward()
    assert bag.bag.weight.grad[0].eq(0).all()  # the padding row never learns


def test_split_words_gives_each_texts_words_as_recbole_splits_a_token_seq_field():
    """Whitespace-separated, case and punctuation kept, cut to ``max_words``; a blank or missing text has none. In
    the bag, one word is one row however many items hold it."""
    words = split_words(["Toy Story (1995)", "", None, "  Story  of a Toy  "], max_words=3)
    assert words == [["Toy", "Story", "(1995)"], [], [], ["Story", "of", "a"]]
    bag = ItemTokenBag(words, dim=2)
    assert bag.bag.num_embeddings == 1 + 5  # (1995), Story, Toy, a, of
    story = int(bag.token_ids[0, 1])
    assert story == int(bag.token_ids[3, 0]) and (bag.token_ids == story).sum() == 2
