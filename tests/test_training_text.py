"""The training and held-out text extraction of the bundled models
(keras_egemma.presets.training_text), on tiny files in each source's format,
and the build scripts' initialisation (keras_egemma.presets.distillation)."""

import gzip
import random

import keras
import numpy as np
import pytest

import keras_egemma as eg
from keras_egemma.presets import training_text as tt
from keras_egemma.presets.distillation import identity_start
from keras_egemma.presets.distillation import teacher_token_embeddings

WORDNET_HEADER = "  1 This software and database is being provided to you, the LICENSEE...\n"


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def wordnet(tmp_path):
    root = tmp_path / "wordnet"
    write(root / "data.noun", WORDNET_HEADER
          + "02084071 05 n 02 dog 0 domestic_dog 0 000 | a member of the genus Canis that has "
            'been domesticated; "the dog barked all night"\n'
          + "03000001 06 n 01 apple 0 000 | fruit with red or yellow or green skin and sweet "
            "to tart crisp whitish flesh\n"
          + "03000002 06 n 01 ox 0 000 | a large animal\n")
    write(root / "data.verb", WORDNET_HEADER
          + "01926311 38 v 01 run 0 000 | move fast by using one's feet; "
            '"Don\'t run--you\'ll be late"\n')
    write(root / "data.adj", WORDNET_HEADER
          + "00001740 00 a 02 able(a) 0 capable 0 000 | having the necessary means or skill "
            'to do something; "able to swim"\n')
    for part, lemmas in (("noun", ["dog", "domestic_dog", "apple"]), ("verb", ["run"]),
                         ("adj", ["able", "2nd"])):
        write(root / f"index.{part}", WORDNET_HEADER
              + "".join(f"{lemma} {part[0]} 1 0 1 0 00000000\n" for lemma in lemmas))
    return str(root)


def test_wordnet_pairs_as_the_mini_build_reads_them(wordnet):
    assert tt.wordnet_pairs(wordnet) == [
        ("dog, domestic dog", "a member of the genus Canis that has been domesticated"),
        ("apple", "fruit with red or yellow or green skin and sweet to tart crisp whitish flesh"),
        ("run", "move fast by using one's feet"),
        ("able, capable", "having the necessary means or skill to do something"),
    ]  # "a large animal" is 14 characters: too short
    assert tt.wordnet_words(wordnet) == {"dog", "apple", "run", "able"}


def test_wordnet_training_pairs_leave_out_the_held_out_definitions(wordnet):
    held_out = "fruit with red or yellow or green skin and sweet to tart crisp whitish flesh"
    sets = tt.wordnet_training_pairs([held_out], seed=3, root=wordnet)
    definitions = [d for _, d in sets["wordnet"]]
    assert held_out not in definitions and len(definitions) == 3
    # The query is the synonyms or one of the question forms about the first lemma.
    for (query, _), lemmas in zip(sets["wordnet"], ["dog, domestic dog", "run", "able, capable"]):
        first = lemmas.split(",")[0]
        assert query == lemmas or (first in query and query != lemmas), query
    assert sets["wordnet examples"] == [
        ("the dog barked all night", "a member of the genus Canis that has been domesticated"),
        ("Don't run--you'll be late", "move fast by using one's feet"),
    ]  # "able to swim" has three words: too short
    # Deterministic for a seed, and the seed picks the query forms.
    assert tt.wordnet_training_pairs([held_out], seed=3, root=wordnet) == sets
    queries = {tuple(q for q, _ in tt.wordnet_training_pairs([], s, wordnet)["wordnet"])
               for s in range(8)}
    assert len(queries) > 1


def test_wordnet_question_forms():
    rng = random.Random(0)
    nouns = {tt.wordnet_question("noun", "apple", rng) for _ in range(50)}
    assert "What is an apple?" in nouns and "What does apple mean?" in nouns
    verbs = {tt.wordnet_question("verb", "run", rng) for _ in range(50)}
    assert "What does it mean to run?" in verbs


HANDBOOK = """<html><body><div class="section"><h2 class="title"><a id="x"></a>6.2. Installing
Packages With apt</h2><div class="para">
  Installing a package is simple. You type <code>apt install</code> and the name of the
  package, and apt fetches it with every package it depends on.</div>
<pre>apt install hello. Not a paragraph.</pre>
<div class="para">Short one.</div>
<table><tr><td><p>A table cell paragraph that is long enough to count as text here.</p></td></tr></table>
<h3 class="title">Notes</h3><div class="para">A heading of one word is dropped, but this
paragraph is long enough. It has a second sentence that makes a pair of its own.</div>
</div></body></html>"""


def test_section_pairs_from_docbook_html(tmp_path):
    items = tt.html_items(write(tmp_path / "sect.html", HANDBOOK))
    assert items[0] == ("heading", "6.2. Installing Packages With apt")
    assert ("paragraph", "Short one.") in items
    assert not any("Not a paragraph" in text or "table cell" in text for _, text in items)
    pairs = tt.section_pairs(items)
    body = ("Installing a package is simple. You type apt install and the name of the package, "
            "and apt fetches it with every package it depends on. Short one.")
    assert pairs == [
        ("Installing a package is simple.",
         "You type apt install and the name of the package, and apt fetches it with every "
         "package it depends on."),
        ("Installing Packages With apt", body),
        ("A heading of one word is dropped, but this paragraph is long enough.",
         "It has a second sentence that makes a pair of its own."),
    ]


FAQ = """<div><h2 class="title">1.2. What is Debian GNU/Linux?</h2></div><p>
Debian GNU/Linux is a particular <em>distribution</em> of the Linux operating system, and
numerous packages that run on it.</p>"""


def test_section_pairs_from_the_faq(tmp_path):
    pairs = tt.section_pairs(tt.html_items(write(tmp_path / "faq.en.html", FAQ)))
    assert pairs == [("What is Debian GNU/Linux?",
                      "Debian GNU/Linux is a particular distribution of the Linux operating "
                      "system, and numerous packages that run on it.")]


PAGE = """<page xmlns="http://projectmallard.org/1.0/" type="topic" id="{id}">
<info><desc>Not used.</desc></info>
<title>{title}</title>
<comment><p>An editor's remark, not help text.</p></comment>
<p>{text}</p>
<section id="s"><title>{section}</title><p>The section's own paragraph is long enough
to be used as a positive here.</p></section>
</page>"""


def test_gnome_help_pairs(tmp_path):
    root = tmp_path / "help"
    write(root / "b.page", PAGE.format(
        id="b", title="Check how much disk space is left", section="Overview",
        text="You can check how much disk space is left with Disk Usage Analyzer."))
    write(root / "a.page", PAGE.format(
        id="a", title="Change the date and time", section="Overview",
        text="If the date and time displayed on the top bar are incorrect, change them."))
    pairs = tt.gnome_help_pairs([str(root)])
    # "Overview" titles two sections: dropped; pages in file-name order.
    assert pairs == [
        ("Change the date and time",
         "If the date and time displayed on the top bar are incorrect, change them."),
        ("Check how much disk space is left",
         "You can check how much disk space is left with Disk Usage Analyzer."),
    ]


def base64_number(value):
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    digits = ""
    while True:
        digits = alphabet[value % 64] + digits
        value //= 64
        if not value:
            return digits


GCIDE_ENTRIES = [
    ("Thermometer", """Thermometer \\Ther*mom"e*ter\\ (th[~e]r*m[o^]m"[-e]*t[~e]r), n.
   [Thermo- + -meter: cf. F. thermom[`e]tre. See {Thermal}.]
   (Physics)
   An instrument for measuring temperature, founded on the
   principle that changes of temperature in bodies are
   accompanied by proportional changes in their volumes.
   [1913 Webster]
"""),
    ("Thermometer", "Thermometer \\Ther*mom\"e*ter\\, v. t.\n   A second entry, ignored here.\n"
                    "   [1913 Webster]\n"),
    ("Scree", "Scree \\Scree\\, n.\n   A pebble; a stone; also, a heap of stones or rocky "
              "debris.\n   [1913 Webster]\n"),
    ("Oolong", "Oolong \\Oo\"long\\, n.\n   a dark Chinese tea that is partly fermented\n"
               "   [WordNet 1.5]\n"),
    ("Cafe", "Caf['e] \\Caf['e]\\, n.\n   See {Coffee house}, a room where coffee is served.\n"
             "   [1913 Webster]\n"),
    ("Two words", "Two words \\Two words\\, n.\n   A headword of two words is left out of "
                  "this source.\n   [1913 Webster]\n"),
]


@pytest.fixture
def gcide(tmp_path):
    data, index = b"", []
    for headword, entry in GCIDE_ENTRIES:
        raw = entry.encode("utf-8")
        index.append(f"{headword}\t{base64_number(len(data))}\t{base64_number(len(raw))}\n")
        data += raw
    root = tmp_path / "dictd"
    root.mkdir()
    with gzip.open(root / "gcide.dict.dz", "wb") as f:
        f.write(data)
    write(root / "gcide.index", "".join(sorted(index, key=str.lower)))
    return str(root)


def test_gcide_pairs(gcide):
    assert tt.gcide_pairs(root=gcide) == [
        ("scree", "A pebble; a stone; also, a heap of stones or rocky debris."),
        ("thermometer", "An instrument for measuring temperature, founded on the principle "
                        "that changes of temperature in bodies are accompanied by proportional "
                        "changes in their volumes."),
    ]  # oolong: a WordNet definition; cafe: a cross-reference; "Two words": not one word
    assert tt.gcide_pairs({"scree"}, root=gcide) == tt.gcide_pairs(root=gcide)[:1]


def test_chatterbot_pairs(tmp_path):
    root = tmp_path / "english"
    write(root / "science.yml", "categories:\n- science\nconversations:\n"
          "- - what is a wavelength\n  - wavelength is the inverse of frequency.\n"
          "- - What is cytology\n  - the study of cells.\n"
          "- - what is cytology\n  - well, from what i can recall it is the study of cells.\n"
          "- - Hello\n")
    write(root / "coding.yml", "conversations:\n- - can you write a loop?\n  - 'for x in y: pass'\n")
    write(root / "trivia.yml", "conversations:\n- - Who painted the Mona Lisa?\n"
          "  - Leonardo da Vinci\n  - a later turn\n- - Same answer?\n  - THE STUDY OF CELLS.\n")
    assert tt.chatterbot_pairs(str(root)) == [
        ("what is a wavelength", "wavelength is the inverse of frequency."),
        ("What is cytology", "the study of cells."),
        ("Who painted the Mona Lisa?", "Leonardo da Vinci"),
    ]


def test_fortunes_pairs(tmp_path):
    root = tmp_path / "fortunes"
    write(root / "people", "A friend is a present which you give yourself. So give it often and well.\n"
          "\t\t-- Robert Louis Stevenson\n%\nToo short.\n%\n"
          "Q: What is the difference between a duck? A: One of its legs is both the same.\n%\n")
    write(root / "people.u8", "A friend is a present. This copy is skipped entirely.\n%\n")
    write(root / "ascii-art", "Pictures. Made of characters, skipped as well.\n%\n")
    assert tt.fortunes_pairs(str(root)) == [
        ("A friend is a present which you give yourself.", "So give it often and well."),
        ("What is the difference between a duck?", "One of its legs is both the same."),
    ]


def test_missing_source_names_the_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install wordnet-base"):
        tt.wordnet_pairs(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="apt-get install dict-gcide"):
        tt.gcide_pairs(root=str(tmp_path))


def test_held_out_sets_are_frozen(monkeypatch):
    monkeypatch.setattr(tt, "mini_split", lambda seed: ({}, {"python docs": [("q", "p")]}))
    monkeypatch.setattr(tt, "chatterbot_pairs", lambda: [(f"q{i}", f"a{i}") for i in range(5)])
    monkeypatch.setattr(tt, "gnome_help_pairs", lambda: [("t", "x")])
    monkeypatch.setattr(tt, "gcide_pairs", lambda vocabulary: [("w", "d")])
    monkeypatch.setattr(tt, "wordnet_words", lambda: set())
    monkeypatch.setattr(tt, "HELD_OUT_SIZE", 3)
    sets = tt.held_out_sets(verify=False)
    assert sets["chatterbot questions"] == tt._sample(
        [(f"q{i}", f"a{i}") for i in range(5)], 3, tt.SEED)
    assert len(sets["chatterbot questions"]) == 3
    digests = {name: tt.pairs_digest(sets[name])
               for name in ("chatterbot questions", "gnome help", "gcide definitions")}
    monkeypatch.setattr(tt, "HELD_OUT_SHA256", digests)
    assert tt.held_out_sets() == sets
    monkeypatch.setattr(tt, "gnome_help_pairs", lambda: [("t", "changed")])
    with pytest.raises(ValueError, match="'gnome help' differs from the frozen one"):
        tt.held_out_sets()


def test_dedupe_keeps_one_relevant_document_per_query():
    pairs = [("A", "x"), ("a", "y"), ("b", "X"), ("c", "z")]
    assert tt._dedupe(pairs) == [("A", "x"), ("c", "z")]


# -- The build scripts' initialisation (keras_egemma.presets.distillation) ----


def test_teacher_token_embeddings_are_the_pca_of_the_teachers():
    model = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")
    table = model.backbone.token_embedding.embeddings
    initial_std = keras.ops.convert_to_numpy(table).std()
    rng = np.random.default_rng(0)
    teacher = rng.standard_normal((model.preprocessor.tokenizer.vocabulary_size(), 128))
    components = teacher_token_embeddings(model, lambda texts: teacher[: len(texts)].copy())
    coords = keras.ops.convert_to_numpy(table).astype("float64")
    np.testing.assert_allclose(coords.std(), initial_std, rtol=1e-4)
    gram = coords.T @ coords  # PCA coordinates are uncorrelated
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-6 * np.abs(gram).max())
    # 128 components of 128-d vectors: the coordinates rebuild the centred teacher vectors.
    centred = teacher - teacher.mean(0)
    scale = coords.std() / (centred @ components.T).std()
    np.testing.assert_allclose(coords / scale @ components, centred, atol=1e-4)


def test_identity_start_makes_a_bag_of_token_embeddings():
    model = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")
    rng = np.random.default_rng(1)
    components = np.linalg.qr(rng.standard_normal((128, 128)))[0].astype("float32")
    identity_start(model, components)
    x = rng.standard_normal((2, 5, 128)).astype("float32")
    for block in model.backbone.transformer_layers:
        out = block(x, padding_mask=np.ones((2, 5), "int32"))
        np.testing.assert_allclose(keras.ops.convert_to_numpy(out), x, atol=1e-6)
    inputs = model.preprocessor(["which planet is red", "a cat sat on the mat today"],
                                sequence_length=16)
    ids = keras.ops.convert_to_numpy(inputs["token_ids"])
    mask = keras.ops.convert_to_numpy(inputs["padding_mask"]).astype(bool)
    # numpy from the equations: scaled token embeddings, final RMSNorm (zero-centred
    # scale), mean over the real tokens, the inverse PCA, L2 normalisation.
    backbone = model.backbone
    h = keras.ops.convert_to_numpy(backbone.token_embedding.embeddings)[ids].astype("float64")
    h *= np.sqrt(128)
    scale = 1 + keras.ops.convert_to_numpy(backbone.final_norm.scale)
    h = h / np.sqrt((h**2).mean(-1, keepdims=True) + 1e-6) * scale
    pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    expected = pooled @ components
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    got = keras.ops.convert_to_numpy(model(inputs))
    np.testing.assert_allclose(got, expected, atol=2e-5)
