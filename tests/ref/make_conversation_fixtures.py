#!/usr/bin/env python3
"""tests/ref/make_conversation_fixtures.py — reference for data/conversation.c.

Writes, under tests/fixtures/ (or the directory given as argv[1]):

  conversations.json           LLaVA-format instruction data: 26 samples, among
                               them multi-turn, unicode, [SEG] answers, empty
                               answers/questions, a leading gpt turn, a sample
                               that ends on a human turn, one that is longer
                               than max_len, texts holding "</s>", "<unk>" and
                               " ASSISTANT: ", and 7 broken samples (role
                               "system", "Human", two human turns in a row, a
                               non-string value, no "conversations", an empty
                               list, a sample that is not an object).
  conversations_expected.json  for several cases (tokenizer fixture, template,
                               max_len, added tokens, placeholder): the indices
                               of the broken samples and, for every other
                               sample, input_ids, labels, the prompt string
                               (in the first case of each template),
                               the untruncated length, the truncated /
                               mismatch flags and LLaVA's cur_len / total_len.

The reference reproduces, independently of the C code, what LLaVA's
llava/train/train.py preprocess_v1 computes with the tokenizer LLaVA, LISA and
AnyRef train with: transformers 4.31 LlamaTokenizer, use_fast=False, legacy
mode, pad_token = unk_token, tokens added with tokenizer.add_tokens(...).
That tokenizer is emulated on top of sentencepiece (transformers is not
needed):
  * the text is split on the "no split" tokens, leftmost and longest first:
    the special pieces <unk> <s> </s> (AddedToken(lstrip=False, rstrip=False):
    whitespace around them is kept) and the added tokens (plain strings in
    4.31: the whitespace on both sides of them is stripped with str.strip
    semantics, "We strip left and right by default");
  * every other segment is encoded on its own with sp.encode (legacy mode:
    each segment gets SentencePiece's dummy prefix);
  * tokenizer(text).input_ids = [BOS] + that.
With a placeholder ("<image>"), LLaVA's tokenizer_image_token is used instead:
the prompt is split on the placeholder first, each chunk tokenized as above
with BOS, the chunks' BOS dropped except the first, and the placeholder id
(here -1 rather than LLaVA's -200) put between them. Our convention (not
LLaVA's, whose model discards them later) labels placeholder positions -100.

Then preprocess_v1 exactly:
  prompt = conv.get_prompt()          (SeparatorStyle.TWO)
  ids    = tokenizer(prompt, max_length=max_len, truncation=True)
  targets = ids; total_len = number of ids != pad (= unk) id
  cur_len = 1; targets[:1] = -100
  for rou in prompt.split(sep2):
      if rou == "": break
      parts = rou.split(sep + roles[1] + ": "); if len(parts) != 2: break
      parts[0] += sep + roles[1] + ": "
      round_len = len(tokenizer(rou).input_ids)
      instruction_len = len(tokenizer(parts[0]).input_ids) - 2
      targets[cur_len : cur_len + instruction_len] = -100
      cur_len += round_len
  targets[cur_len:] = -100
  if cur_len < max_len and cur_len != total_len: targets[:] = -100 (mismatch)
Samples: a leading "gpt" turn is dropped; roles must then alternate
human, gpt, ...; "from" other than "human"/"gpt", a non-string "value", no
or an empty "conversations" list: broken (LLaVA would raise).

Needs: apt-get install python3-sentencepiece. Reads tests/fixtures/tok_bpe.model
and tok_rws.model (written by tests/ref/make_tokenizer_fixtures.py).
Run from the repository root: /usr/bin/python3 tests/ref/make_conversation_fixtures.py
"""
import json
import os
import sys

import sentencepiece as spm

OUT = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures"
FIX = "tests/fixtures"
IGNORE = -100
PLACEHOLDER_ID = -1

TEMPLATES = {
    "llava_v1": {
        "system": "You are LLaVA, a large language and vision assistant trained by UW Madison WAIV Lab."
                  "You are able to understand the visual content that the user provides, and assist the "
                  "user with a variety of tasks using natural language.Follow the instructions carefully "
                  "and explain your answers in detail.",
        "roles": ("USER", "ASSISTANT"), "sep": " ", "sep2": "</s>"},
    "vicuna_v1_1": {
        "system": "A chat between a curious user and an artificial intelligence assistant. "
                  "The assistant gives helpful, detailed, and polite answers to the user's questions.",
        "roles": ("USER", "ASSISTANT"), "sep": " ", "sep2": "</s>"},
}


def H(v):
    return {"from": "human", "value": v}


def G(v):
    return {"from": "gpt", "value": v}


LONG_Q = ("Describe every object you can see in this picture of a busy street market, "
          "including the people, the stalls, the fruit and the vegetables, in as much detail as possible.")
LONG_A = ("There is a man in a blue jacket buying apples, a woman with a red umbrella, "
          "a stall with oranges, bananas and pears, and behind them a small car and a bicycle.")

SAMPLES = [
    {"id": "single", "conversations": [H("What is in the picture?"), G("A brown dog sitting on the grass.")]},
    {"id": "multi", "conversations": [H("Where is the cat?"), G("On the sofa, next to the window."),
                                      H("What color is it?"), G("It is black and white."),
                                      H("Is it sleeping?"), G("Yes.")]},
    {"id": "unicode", "conversations": [H("Qu'est-ce que c'est ? café, naïve, Zürich — 中文字符 😀"),
                                        G("Это кошка. 日本語のテキスト 👍🏽 ∑x² «quote» €100")]},
    {"id": "seg_it_is", "conversations": [H("<im_start><image><im_end>\nCan you segment the zebra in this image?"),
                                          G("It is [SEG].")]},
    {"id": "seg_expr", "conversations": [H("<image>\nCan you segment the left man in this image?"),
                                         G("left man[SEG].")]},
    {"id": "seg_two", "conversations": [H("Please segment the dog and the cat."), G("Sure, [SEG] and [SEG] .")]},
    {"id": "empty_answer_mid", "conversations": [H("Hello"), G(""), H("Are you there?"), G("Yes, I am here.")]},
    {"id": "empty_answer_end", "conversations": [H("Say nothing."), G("")]},
    {"id": "leading_gpt", "conversations": [G("Hi! How can I help?"), H("Describe the image."),
                                            G("A red car parked on a street.")]},
    {"id": "ends_on_human", "conversations": [H("One"), G("Two"), H("Three")]},
    {"id": "long", "conversations": [H(LONG_Q), G(LONG_A)] * 4},
    {"id": "bad_system", "conversations": [{"from": "system", "value": "You are helpful."},
                                           H("Hi"), G("Hello")]},
    {"id": "bad_order", "conversations": [H("Hi"), H("Anyone?"), G("Hello")]},
    {"id": "bad_value", "conversations": [H("How many?"), G(3)]},
    {"id": "bad_no_conversations", "conversation": [H("Hi"), G("Hello")]},
    {"id": "bad_empty", "conversations": []},
    "just a string",
    {"id": "sep_in_question", "conversations": [H("Please say ASSISTANT: hello"), G("hello")]},
    {"id": "eos_in_answer", "conversations": [H("What ends a sequence?"), G("The tag </s> ends a sentence.")]},
    {"id": "unk_in_question", "conversations": [H("What does <unk> mean?"), G("An unknown token.")]},
    {"id": "whitespace", "conversations": [H("  Two  leading spaces,\ttab and\nnewline  "),
                                           G("Answer with trailing space "), H("\n"), G("ok")]},
    {"id": "empty_question", "conversations": [H(""), G("Something.")]},
    {"id": 42, "conversations": [H("Count to five."), G("1 2 3 4 5")]},
    {"conversations": [H("<im_start> <image> <im_end> Segment the umbrella."), G("the umbrella [SEG] .")]},
    {"id": "bad_role_case", "conversations": [{"from": "Human", "value": "Hi"}, G("Hello")]},
    {"id": "seg_only", "conversations": [H("Segment the horse."), G("[SEG].")]},
]

ADDED = ["[SEG]", "<im_start>", "<im_end>"]


class SlowLlamaTokenizer:
    """transformers 4.31 LlamaTokenizer(use_fast=False, legacy) emulated on sentencepiece."""

    def __init__(self, model_path, added, strip_added, placeholders):
        self.sp = spm.SentencePieceProcessor(model_file=model_path)
        n = self.sp.get_piece_size()
        self.bos, self.eos, self.unk = self.sp.bos_id(), self.sp.eos_id(), self.sp.unk_id()
        self.pad = self.unk                       # tokenizer.pad_token = tokenizer.unk_token
        self.special = {self.sp.id_to_piece(i): i for i in (self.unk, self.bos, self.eos)}
        self.added = {t: n + k for k, t in enumerate(added)}
        self.strip_added = strip_added
        self.placeholders = placeholders
        self.vocab = n + len(added)

    def _trie_split(self, text):
        """[(is_token, str)], leftmost then longest match of a no-split token."""
        toks = list(self.special) + list(self.added)
        out, i, start = [], 0, 0
        while i < len(text):
            best = max((t for t in toks if text.startswith(t, i)), key=len, default=None)
            if best is None:
                i += 1
                continue
            if i > start:
                out.append([False, text[start:i]])
            out.append([True, best])
            i += len(best)
            start = i
        if start < len(text):
            out.append([False, text[start:]])
        return out

    def tokenize_ids(self, text):
        parts = self._trie_split(text)
        for k, (is_tok, s) in enumerate(parts):
            if is_tok and s in self.added and self.strip_added:
                if k + 1 < len(parts) and parts[k + 1][1]:
                    parts[k + 1][1] = parts[k + 1][1].lstrip()
                if k > 0 and parts[k - 1][1]:
                    parts[k - 1][1] = parts[k - 1][1].rstrip()
        ids = []
        for is_tok, s in parts:
            if not s:
                continue
            if is_tok:
                ids.append(self.special[s] if s in self.special else self.added[s])
            else:
                ids += self.sp.encode(s)
        return ids

    def __call__(self, text):
        """tokenizer(text).input_ids, or tokenizer_image_token(text) with placeholders."""
        if not self.placeholders:
            return [self.bos] + self.tokenize_ids(text)
        assert len(self.placeholders) == 1
        chunks = [[self.bos] + self.tokenize_ids(c) for c in text.split(self.placeholders[0])]
        ids = [self.bos]
        for k, c in enumerate(chunks):
            if k:
                ids.append(PLACEHOLDER_ID)
            ids += c[1:]
        return ids


def get_prompt(tpl, messages):
    seps = [tpl["sep"], tpl["sep2"]]
    ret = tpl["system"] + seps[0]
    for i, (role, msg) in enumerate(messages):
        if msg:
            ret += role + ": " + msg + seps[i % 2]
        else:
            ret += role + ":"
    return ret


def messages_of(sample, tpl):
    """The (role, text) list of a sample, or None if LLaVA could not use it."""
    if not isinstance(sample, dict) or not isinstance(sample.get("conversations"), list):
        return None
    source = sample["conversations"]
    if not source:
        return None
    roles = {"human": tpl["roles"][0], "gpt": tpl["roles"][1]}
    for turn in source:
        if (not isinstance(turn, dict) or turn.get("from") not in roles
                or not isinstance(turn.get("value"), str)):
            return None
    if roles[source[0]["from"]] != tpl["roles"][0]:
        source = source[1:]
    out = []
    for j, turn in enumerate(source):
        role = roles[turn["from"]]
        if role != tpl["roles"][j % 2]:
            return None
        out.append((role, turn["value"]))
    return out


def preprocess_v1(messages, tpl, tok, max_len):
    prompt = get_prompt(tpl, messages)
    full = tok(prompt)
    ids = full[:max_len]
    targets = list(ids)
    total_len = sum(1 for x in ids if x != tok.pad)
    sep = tpl["sep"] + tpl["roles"][1] + ": "

    def mask(a, b):
        for k in range(max(a, 0), min(b, len(targets))):
            targets[k] = IGNORE

    cur_len = 1
    mask(0, cur_len)
    for rou in prompt.split(tpl["sep2"]):
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        round_len = len(tok(rou))
        instruction_len = len(tok(parts[0])) - 2
        mask(cur_len, cur_len + instruction_len)
        cur_len += round_len
    mask(cur_len, len(targets))
    mismatch = cur_len < max_len and cur_len != total_len
    if mismatch:
        targets = [IGNORE] * len(targets)
    targets = [IGNORE if x == PLACEHOLDER_ID else y for x, y in zip(ids, targets)]
    return {"prompt": prompt, "ids": ids, "labels": targets, "full_len": len(full),
            "truncated": len(full) > max_len, "mismatch": mismatch,
            "cur_len": cur_len, "total_len": total_len}


def run_case(name, model, template, max_len, added, strip, placeholders, with_prompts):
    tpl = TEMPLATES[template]
    tok = SlowLlamaTokenizer(os.path.join(FIX, model), added, strip, placeholders)
    case = {"name": name, "tokenizer": model, "template": template, "max_len": max_len,
            "added": added, "strip_added": strip, "placeholders": placeholders,
            "vocab_size": tok.vocab, "pad_id": tok.pad, "skipped": [], "samples": []}
    for i, s in enumerate(SAMPLES):
        msgs = messages_of(s, tpl)
        if msgs is None:
            case["skipped"].append(i)
            continue
        r = preprocess_v1(msgs, tpl, tok, max_len)
        r["index"] = i
        if not with_prompts:
            del r["prompt"]
        case["samples"].append(r)
    return case


def main():
    cases = [
        run_case("bpe_llava", "tok_bpe.model", "llava_v1", 400, ADDED, True, [], True),
        run_case("bpe_vicuna", "tok_bpe.model", "vicuna_v1_1", 2048, ADDED, True, [], True),
        run_case("bpe_llava_nostrip", "tok_bpe.model", "llava_v1", 2048, ADDED, False, [], False),
        run_case("rws_llava", "tok_rws.model", "llava_v1", 2048, ["[SEG]"], True, [], False),
        run_case("bpe_llava_image", "tok_bpe.model", "llava_v1", 2048, ADDED, True, ["<image>"], False),
    ]
    # The fixture must exercise what the C test relies on.
    c0 = {s["index"]: s for s in cases[0]["samples"]}
    assert [s["index"] for s in cases[0]["samples"] if s["truncated"]] == [10], "only 'long' is truncated"
    assert c0[10]["cur_len"] > 400 and any(x != IGNORE for x in c0[10]["labels"]), "long keeps labels"
    assert sorted(i for i, s in c0.items() if s["mismatch"]) == [7, 9, 17, 18, 19, 21]
    assert cases[0]["skipped"] == [11, 12, 13, 14, 15, 16, 24]
    for c in cases[1:]:
        assert not any(s["truncated"] for s in c["samples"])
    assert any(PLACEHOLDER_ID in s["ids"] for s in cases[4]["samples"])
    # strip and no-strip differ on the [SEG] samples
    c2 = {s["index"]: s for s in cases[2]["samples"]}
    assert c0[3]["ids"] != c2[3]["ids"]

    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "conversations.json"), "w", encoding="utf-8") as f:
        json.dump(SAMPLES, f, ensure_ascii=False, indent=1)
        f.write("\n")
    doc = {"generated_by": "tests/ref/make_conversation_fixtures.py — do not edit",
           "input": "conversations.json", "cases": cases}
    with open(os.path.join(OUT, "conversations_expected.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    for c in cases:
        n_sup = sum(sum(1 for x in s["labels"] if x != IGNORE) for s in c["samples"])
        print("%-18s samples %2d skipped %d truncated %d mismatch %d tokens %5d supervised %4d" % (
            c["name"], len(c["samples"]), len(c["skipped"]), sum(s["truncated"] for s in c["samples"]),
            sum(s["mismatch"] for s in c["samples"]), sum(len(s["ids"]) for s in c["samples"]), n_sup))


if __name__ == "__main__":
    main()
