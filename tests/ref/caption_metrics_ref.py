"""tests/ref/caption_metrics_ref.py — expected region-captioning metrics for
tests/test_caption_metrics.c, computed by coco-caption itself: PyPI's
pycocoevalcap (salaniz/pycocoevalcap, the maintained coco-caption) Bleu(4),
Cider and PTBTokenizer (Stanford CoreNLP 3.4.1's PTBTokenizer, shipped in the
wheel; needs `java` on PATH).

Usage (pycocoevalcap in a venv, Java installed):
    /usr/bin/python3 -m venv --system-site-packages VENV && VENV/bin/pip install pycocoevalcap
    VENV/bin/python tests/ref/caption_metrics_ref.py tests/fixtures/caption_metrics.json

Writes one JSON file:
  "tokenize": [{"raw": s, "tok": PTBTokenizer output}] on caption-like strings
              (the cases eval/caption_metrics.c claims to match);
  "sets":     [{"name", "tokenized": bool, "cands": [str], "refs": [[str]],
                "bleu": [b1..b4], "cider": mean, "cider_per": [per sample]}]
              — generated sets (repeated words, missing n-grams, empty
              candidates, several references of different lengths) scored
              by Bleu/Cider on pre-tokenised text, and raw sets scored after
              PTBTokenizer as COCOEvalCap does.
"""
import json
import random
import sys

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

TOKENIZE_CASES = [
    "A man riding a wave on top of a surfboard.",
    "The man's hat (red) is on the table, isn't it?",
    "Two dogs don't play; they can't! I'm sure we've seen it... \"Yes,\" she said.",
    "A black-and-white cat sitting on a 3.5 inch ledge with 1,000 birds & 20% off $5.",
    "left  side   of  the   picture -- near the [window] {door} and/or wall: ok",
    "It's 5 o'clock. We'd go, they'll stay, you're 'great' `fine' ok",
    "THE GIRL IN BLUE SHIRT!!! what?? ... - -- ---",
    "tab\tseparated\twords",
    "guy on left's shirt 2nd from right 's",
    "can not cannot gonna wanna gotta lemme gimme",
    "the dogs' bowls are empty.",
    "Zebra at 10:30 on the far-left; 2 of 3 giraffes",
    "",
    "   ",
    "...",
    "a person wearing a t-shirt , jeans and a cap",
    "Second from the LEFT!",
    "the one in the middle?",
    "man in white shirt holding a racket: tennis",
    "woman w/ umbrella",
    "baby elephant (left)",
    "the bigger slice of pizza...",
    "white car next to the bus - front",
    "kid 's toy, 'red' ball",
    "Hot-dog with ketchup and mustard!",
    "they're both wearing hats; we'll see",
    "#3 player in 100% cotton",
    "first,second;third:fourth",
    "multiple   spaces\tand\ttabs",
    "closest to camera.",
]

WORDS = ["a", "the", "man", "woman", "red", "shirt", "on", "left", "right",
         "of", "dog", "in", "blue", "car", "sitting", "big", "small", "white"]


def gen_sentence(rng, lo, hi):
    n = rng.randint(lo, hi)
    return " ".join(rng.choice(WORDS) for _ in range(n))


def scores(gts, res):
    b, _ = Bleu(4).compute_score(gts, res)
    c, per = Cider().compute_score(gts, res)
    return [float(x) for x in b], float(c), [float(x) for x in per]


def make_set(name, cands, refs, tokenized):
    keys = list(range(len(cands)))
    if tokenized:
        gts = {k: list(refs[k]) for k in keys}
        res = {k: [cands[k]] for k in keys}
    else:
        tok = PTBTokenizer()
        gts = tok.tokenize({k: [{"caption": r} for r in refs[k]] for k in keys})
        res = tok.tokenize({k: [{"caption": cands[k]}] for k in keys})
    b, c, per = scores(gts, res)
    # Cider's per-sample list follows gts.keys() order (= keys here).
    return {"name": name, "tokenized": tokenized, "cands": cands, "refs": refs,
            "bleu": b, "cider": c, "cider_per": per}


def main():
    out = sys.argv[1]
    rng = random.Random(8)
    sets = []

    # 1. generated pre-tokenised set: varied lengths, 1-5 references
    cands, refs = [], []
    for i in range(40):
        nref = rng.randint(1, 5)
        rs = [gen_sentence(rng, 1, 12) for _ in range(nref)]
        if i % 3 == 0:   # a candidate close to a reference, with a word swapped
            w = rs[0].split()
            w[rng.randrange(len(w))] = rng.choice(WORDS)
            c = " ".join(w)
        else:
            c = gen_sentence(rng, 1, 10)
        cands.append(c)
        refs.append(rs)
    sets.append(make_set("random", cands, refs, True))

    # 2. hand-made edge cases (pre-tokenised)
    cands = [
        "",                                   # empty candidate
        "the the the the the the",            # repeated word (clipping)
        "man",                                # one word: no bigrams
        "a man in a red shirt",               # exact match of a reference
        "dog car blue",                       # missing every higher n-gram
        "a man in a red shirt on the left of the car",  # longer than refs
        "woman",                              # shorter than refs
        "red red shirt shirt",
    ]
    refs = [
        ["a man", "the man on the left"],
        ["the man", "the red car on the left", "the"],
        ["man", "a man"],
        ["a man in a red shirt", "man wearing red", "the person in the red shirt on the right side"],
        ["blue car next to a dog", "dog"],
        ["man in red shirt"],
        ["a woman in blue on the right", "woman sitting", "the woman", "woman on the right side of the picture"],
        ["red shirt", "red red shirt", "man in the red shirt"],
    ]
    sets.append(make_set("edge", cands, refs, True))

    # 3. a set where every candidate is empty
    sets.append(make_set("all_empty", ["", ""], [["a dog"], ["the cat on the mat", "cat"]], True))

    # 4. one sample (BLEU's "closest" rule still; CIDEr df = 1 everywhere, log 1 = 0 idf)
    sets.append(make_set("single", ["a red car"], [["the red car", "a car"]], True))

    # 5. raw captions through PTBTokenizer, as COCOEvalCap scores them
    cands = ["A man in a red shirt.", "The dog's bowl (left)!", "two cats, sitting", "Left one...",
             "the bigger slice of pizza", "woman w/ umbrella", "It's the car on the right; white."]
    refs = [["A man wearing a red shirt.", "man in red"],
            ["dog's bowl on the left", "The bowl (left) of the dog."],
            ["Two cats sitting on a couch.", "cats"],
            ["the left one", "LEFT"],
            ["bigger slice", "the big slice of pizza on the plate", "pizza slice"],
            ["a woman with an umbrella", "woman holding umbrella"],
            ["white car, right side", "the car on the right", "It's white."]]
    sets.append(make_set("raw", cands, refs, False))

    tok = PTBTokenizer().tokenize({i: [{"caption": s}] for i, s in enumerate(TOKENIZE_CASES)})
    tokcases = [{"raw": s, "tok": tok[i][0]} for i, s in enumerate(TOKENIZE_CASES)]

    with open(out, "w") as f:
        json.dump({"tokenize": tokcases, "sets": sets}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
