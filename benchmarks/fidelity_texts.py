"""Real text for measuring how far quantisation moves the embeddings.

`fidelity_texts()` gives a few hundred texts: the packaged sample corpus
(paragraphs of Python's language reference, split into a first-sentence query
and the rest as a titled document) and general English sentences written for
this project (everyday topics, no code), which are this file's own text.
`benchmarks/quantization_fidelity.py` and `tests/test_quantization_fidelity.py`
both measure on them.
"""

import re

from keras_egemma.data import SAMPLE_CORPUS
from keras_egemma.evaluation.datasets import read_jsonl

ENGLISH_SENTENCES = [
    "The train to the coast leaves every morning at half past seven.",
    "She planted tomatoes and basil in the small garden behind the house.",
    "Heavy rain is expected across the north of the country this weekend.",
    "The museum opens a new exhibition of early photographs next month.",
    "He forgot his umbrella on the bus and walked home in the rain.",
    "Regular exercise and enough sleep help people stay healthy.",
    "The bakery on the corner sells fresh bread until noon.",
    "Our flight was delayed for three hours because of fog.",
    "The children built a sandcastle and watched the tide wash it away.",
    "A good map makes it much easier to find your way in an old city.",
    "The council voted to build a new bridge over the river.",
    "Cooking rice properly takes patience and the right amount of water.",
    "The orchestra played a symphony that lasted almost an hour.",
    "Many birds fly south for the winter when the days grow shorter.",
    "The library lends books, films and music for free.",
    "After the storm, volunteers helped clear fallen trees from the road.",
    "The doctor advised him to drink more water and rest for a week.",
    "The price of coffee has risen sharply over the past year.",
    "A quiet walk in the forest can lift your mood.",
    "The team celebrated after winning the final match of the season.",
    "The recipe calls for two eggs, a cup of flour and a pinch of salt.",
    "Students gathered in the hall to hear the results of the election.",
    "The old lighthouse still guides ships safely into the harbour.",
    "Her grandmother taught her how to knit scarves and warm socks.",
    "The shop closes early on Sundays and public holidays.",
    "Scientists observed a comet passing close to the Earth.",
    "The farmer harvested the wheat before the autumn rains arrived.",
    "Learning a second language opens doors to other cultures.",
    "The hotel room had a view of the mountains and the lake.",
    "Traffic was slow on the motorway because of road works.",
    "The cat slept all afternoon in a patch of warm sunlight.",
    "He repaired the bicycle's flat tyre with a patch and some glue.",
    "The festival attracts thousands of visitors every summer.",
    "A balanced diet includes fruit, vegetables and whole grains.",
    "The teacher read a story aloud while the class listened.",
    "The company announced that it would hire two hundred new workers.",
    "Snow covered the village overnight and closed the schools.",
    "The hikers reached the summit just before sunset.",
    "Please remember to switch off the lights when you leave the room.",
    "The market sells cheese, olives and honey from local farms.",
    "An earthquake shook the region, but nobody was seriously hurt.",
    "The new park has a playground, a pond and a cycling path.",
    "My neighbour plays the piano every evening after dinner.",
    "The ferry crosses the channel in about ninety minutes.",
    "Solar panels on the roof now provide most of the house's electricity.",
    "The detective found a clue hidden inside an old letter.",
    "Reading before bed helps many people fall asleep.",
    "The river flooded the fields after a week of heavy rain.",
]


def fidelity_texts():
    """`(queries, titles, documents)`: lists of strings; the queries are the
    corpus' first sentences followed by `ENGLISH_SENTENCES`, the documents
    (with their titles) the rest of each corpus paragraph. 338 texts in all."""
    queries, titles, documents = [], [], []
    for _, row in read_jsonl(SAMPLE_CORPUS):
        sentences = re.split(r"(?<=[.!?])\s+", row["text"])
        if len(sentences) >= 2:
            queries.append(sentences[0])
            titles.append(row["title"])
            documents.append(" ".join(sentences[1:]))
    return queries + ENGLISH_SENTENCES, titles, documents
