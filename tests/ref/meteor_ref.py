"""tests/ref/meteor_ref.py — reference METEOR scores for tests/test_meteor.c,
computed by coco-caption itself: PyPI pycocoevalcap's Meteor, which runs
METEOR 1.5 (meteor-1.5.jar, shipped in the wheel with its paraphrase table)
as `java -jar meteor-1.5.jar - - -stdio -l en -norm`, one SCORE line per
sample and one EVAL line for the corpus (the corpus score is computed from
the summed sufficient statistics, not averaged).

Usage (pycocoevalcap in a venv, Java installed):
    /usr/bin/python3 -m venv --system-site-packages VENV && VENV/bin/pip install pycocoevalcap
    VENV/bin/python tests/ref/meteor_ref.py tests/fixtures/meteor.json

Writes one JSON file:
  "sets": [{"name", "cands": [str], "refs": [[str]], "corpus": float,
            "per": [float per sample]}]
  Strings are what coco-caption hands METEOR: already PTB-tokenised
  (lowercase, space separated, punctuation gone, clitics split).
  Sets:
    "synthetic": 300 generated region captions (shapes, colours, positions,
                 COCO-like people/animals/objects) with 1-4 references each;
                 candidates derived from a reference by synonym swaps,
                 plural/singular and verb-form changes, reorderings, dropped
                 and inserted words, hyphenated words and PTB clitics, or
                 unrelated; a few identical to a reference, a few empty.
    "exact":     cases where only exact matches can occur (no two distinct
                 words share a stem, synset or paraphrase), for the exact
                 invariants of the C implementation.
"""
import json
import random
import sys

from pycocoevalcap.meteor.meteor import Meteor

COLOURS = ["red", "blue", "green", "yellow", "white", "black", "purple", "grey", "gray", "orange", "pink", "brown"]
SHAPES = ["circle", "square", "triangle", "star", "rectangle", "box", "ball", "disk"]
SIZES = ["big", "large", "small", "little", "tiny", "huge"]
POS = ["on the left", "on the right", "at the top", "at the bottom", "in the middle", "in the center",
       "in the top left corner", "near the edge", "next to the circle", "above the square",
       "below the red star", "left of the triangle", "closest to the camera", "in the front",
       "in the back", "second from the left", "far right", "left-most", "right side of the picture"]
PEOPLE = ["man", "woman", "boy", "girl", "person", "guy", "lady", "kid", "child", "player", "men", "women",
          "people", "children", "kids", "persons"]
ANIMALS = ["dog", "cat", "horse", "elephant", "giraffe", "zebra", "sheep", "cow", "bird", "bear", "puppy",
           "dogs", "cats", "horses", "elephants", "giraffes", "zebras", "cows", "birds"]
OBJECTS = ["car", "bus", "truck", "bike", "bicycle", "motorcycle", "couch", "sofa", "chair", "table", "bed",
           "tv", "television", "laptop", "phone", "umbrella", "plate", "bowl", "cup", "glass", "bottle",
           "pizza", "sandwich", "cake", "photo", "photograph", "picture", "image", "shirt", "jacket",
           "t-shirt", "hat", "cap", "rock", "stone", "boat", "ship", "road", "street", "street sign"]
VERBS = ["sitting", "sits", "sat", "standing", "stands", "stood", "walking", "walks", "walked", "holding",
         "holds", "held", "wearing", "wears", "wore", "riding", "rides", "rode", "eating", "eats", "ate",
         "looking", "looks", "jumping", "jumps", "leaping", "running", "runs", "ran", "playing", "plays",
         "lying", "laying", "carrying", "watching"]
ADJ = ["black-and-white", "striped", "wooden", "larger", "largest", "bigger", "biggest", "smaller",
       "smallest", "tall", "taller", "short", "old", "young", "older", "dark", "light", "bright", "shiny"]
FUNC = ["a", "the", "an", "of", "with", "on", "in", "and", "to", "at", "near", "by", "is", "it", "that"]

# substitutions that METEOR may match as stems, synonyms or paraphrases
SUBST = {
    "big": ["large", "huge", "bigger", "biggest"], "large": ["big", "larger", "largest"],
    "small": ["little", "tiny", "smaller", "smallest"], "little": ["small"],
    "man": ["guy", "person", "men", "gentleman"], "woman": ["lady", "women", "female"],
    "kid": ["child", "kids", "boy"], "child": ["kid", "children"], "boy": ["kid", "boys"],
    "girl": ["girls", "lady"], "person": ["people", "persons", "individual", "man"],
    "dog": ["dogs", "puppy", "pup", "canine"], "cat": ["cats", "kitten", "kitty"],
    "couch": ["sofa", "couches"], "sofa": ["couch"], "car": ["cars", "automobile", "auto", "vehicle"],
    "bike": ["bicycle", "bikes", "motorcycle"], "bicycle": ["bike"], "tv": ["television", "tvs"],
    "television": ["tv"], "photo": ["photograph", "picture", "image", "photos"],
    "picture": ["image", "photo", "pictures"], "image": ["picture"], "rock": ["stone", "rocks"],
    "stone": ["rock"], "boat": ["ship", "boats"], "road": ["street", "roads"], "street": ["road"],
    "middle": ["center", "centre"], "center": ["middle", "centre"], "grey": ["gray"], "gray": ["grey"],
    "purple": ["violet"], "sitting": ["sits", "sat", "seated", "sit"], "sits": ["sitting"],
    "standing": ["stands", "stood", "stand"], "walking": ["walks", "walked", "walk"],
    "holding": ["holds", "held", "hold", "carrying"], "wearing": ["wears", "wore", "wear", "dressed in"],
    "riding": ["rides", "rode", "ride"], "eating": ["eats", "ate", "eat"], "looking": ["looks", "watching", "staring"],
    "jumping": ["jumps", "leaping", "jump"], "running": ["runs", "ran", "run"], "playing": ["plays", "play"],
    "lying": ["laying", "lies", "lay"], "left": ["left-most", "leftmost"], "right": ["right-most", "rightmost"],
    "top": ["upper", "tops"], "bottom": ["lower", "bottoms"], "near": ["close", "next", "nearest"],
    "front": ["foreground"], "back": ["background", "rear"], "shirt": ["t-shirt", "shirts", "top"],
    "hat": ["cap", "hats"], "square": ["squares", "box"], "circle": ["circles", "disk", "ring"],
    "triangle": ["triangles"], "star": ["stars"], "plate": ["dish", "plates"], "cup": ["mug", "cups"],
    "glass": ["glasses", "cup"], "phone": ["cellphone", "telephone", "phones"], "bowl": ["dish", "bowls"],
    "tall": ["taller", "high"], "old": ["older", "elderly", "aged"], "young": ["younger", "youthful"],
    "dark": ["darker", "black"], "bright": ["brighter", "shiny"], "picture 's": ["image 's"],
}


def np_phrase(rng):
    r = rng.random()
    det = rng.choice(["a", "the", "the", "an", "two", "three", ""])
    parts = [det] if det else []
    if r < 0.35:
        if rng.random() < 0.6:
            parts.append(rng.choice(SIZES))
        parts += [rng.choice(COLOURS), rng.choice(SHAPES)]
    elif r < 0.6:
        if rng.random() < 0.4:
            parts.append(rng.choice(ADJ))
        parts.append(rng.choice(PEOPLE))
    elif r < 0.8:
        if rng.random() < 0.5:
            parts.append(rng.choice(COLOURS + ADJ))
        parts.append(rng.choice(ANIMALS))
    else:
        if rng.random() < 0.5:
            parts.append(rng.choice(COLOURS + SIZES))
        parts.append(rng.choice(OBJECTS))
    return parts


def caption(rng):
    w = np_phrase(rng)
    r = rng.random()
    if r < 0.4:
        w += rng.choice(POS).split()
    elif r < 0.8:
        w += [rng.choice(VERBS)] + [rng.choice(["a", "the", "on a", "in the", "with a", "next to the"])] + \
            np_phrase(rng)[1:]
        if rng.random() < 0.3:
            w += rng.choice(POS).split()
    else:
        w += ["with", "a", rng.choice(COLOURS), rng.choice(OBJECTS)]
        if rng.random() < 0.3:
            w += ["'s"] + [rng.choice(OBJECTS)]
    if rng.random() < 0.08:
        w += ["that", "does", "n't", "have", "a", rng.choice(OBJECTS)]
    if rng.random() < 0.08:
        w = [rng.choice(PEOPLE), "'s"] + w
    return " ".join(" ".join(w).split())


def perturb(rng, s):
    w = s.split()
    ops = rng.randint(1, 4)
    for _ in range(ops):
        if not w:
            break
        op = rng.random()
        i = rng.randrange(len(w))
        if op < 0.45 and w[i] in SUBST:
            w[i] = rng.choice(SUBST[w[i]])
        elif op < 0.6 and len(w) > 2:                    # reorder: move a span
            a = rng.randrange(len(w))
            b = min(len(w), a + rng.randint(1, 3))
            span = w[a:b]
            del w[a:b]
            j = rng.randrange(len(w) + 1)
            w[j:j] = span
        elif op < 0.72 and len(w) > 1:                   # drop a word
            del w[i]
        elif op < 0.85:                                  # insert a word
            w.insert(i, rng.choice(FUNC + COLOURS + SIZES + VERBS[:6]))
        else:                                            # swap neighbours
            if i + 1 < len(w):
                w[i], w[i + 1] = w[i + 1], w[i]
    return " ".join(" ".join(w).split())


def meteor(cands, refs):
    m = Meteor()
    gts = {i: list(refs[i]) for i in range(len(cands))}
    res = {i: [cands[i]] for i in range(len(cands))}
    score, per = m.compute_score(gts, res)
    del m
    return float(score), [float(x) for x in per]


def make_set(name, cands, refs):
    corpus, per = meteor(cands, refs)
    assert len(per) == len(cands)
    return {"name": name, "cands": cands, "refs": refs, "corpus": corpus, "per": per}


def main():
    out = sys.argv[1]
    rng = random.Random(1505)
    cands, refs = [], []
    for i in range(300):
        base = caption(rng)
        nref = rng.randint(1, 4)
        rs = [base] + [perturb(rng, base) if rng.random() < 0.7 else caption(rng) for _ in range(nref - 1)]
        rng.shuffle(rs)
        k = i % 20
        if k == 0:
            c = rs[0]                     # identical to a reference
        elif k == 1:
            c = caption(rng)              # unrelated
        elif k == 2 and i % 60 == 2:
            c = ""                        # empty candidate
        else:
            c = perturb(rng, base)
        cands.append(c)
        refs.append(rs)
    sets = [make_set("synthetic", cands, refs)]

    # exact-only: words chosen so that no two distinct words share a stem,
    # a WordNet synset or (we assume, checked by the C test) a paraphrase.
    ex_c = ["the red circle", "the red circle on the left", "circle red the",
            "xq zv red", "blue", "a b c d e f", "a b c d e f", "the the the", "red"]
    ex_r = [["the red circle"], ["the red circle", "on the left"], ["the red circle"],
            ["the red circle"], ["red"], ["a b c x d e f"], ["f e d c b a"], ["the"], ["red", "red"]]
    sets.append(make_set("exact", ex_c, ex_r))

    with open(out, "w") as f:
        json.dump({"sets": sets}, f, indent=0)
        f.write("\n")


if __name__ == "__main__":
    main()
