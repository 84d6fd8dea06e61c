#!/usr/bin/env python3
"""tests/ref/make_tokenizer_fixtures.py — reference encodings for data/tokenizer.c.

Trains two small SentencePiece BPE models with Debian's python3-sentencepiece
and writes, under tests/fixtures/ (or the directory given as argv[1]):

  tok_bpe.model       LLaMA-like: identity normaliser, add_dummy_prefix=True,
                      remove_extra_whitespaces=False, split_digits=True,
                      byte_fallback=True, allow_whitespace_only_pieces=True,
                      one user-defined symbol "<ud>".
  tok_bpe.json        the same model as a Hugging Face tokenizer.json, built
                      the way transformers' LlamaConverter lays it out:
                      BPE(vocab, merges, byte_fallback, fuse_unk), normaliser
                      Sequence[Prepend("▁"), Replace(" ", "▁")], decoder
                      Sequence[Replace("▁"," "), ByteFallback, Fuse,
                      Strip(" ",1,0)], added tokens <unk> <s> </s> (special)
                      and <ud> (normalized, not special).
  tok_rws.model       the other branches: add_dummy_prefix=False,
                      remove_extra_whitespaces=True, no byte fallback (unknown
                      characters become <unk>), a control symbol "<ctrl>", and
                      four pieces rewritten to type UNUSED after training.
  tok_cases_bpe_model.txt, tok_cases_bpe_json.txt, tok_cases_rws_model.txt
                      the test strings with the reference ids (plain, with
                      BOS, with BOS+EOS) and the reference decodes, plus
                      decodes of random id sequences.

The added tokens listed in SPECIALS are appended after the base vocabulary in
that order (ids n, n+1, ...) and matched whole in the raw text before
normalisation, like Hugging Face added tokens with normalized=False. For the
.model references that is emulated exactly: the text is split on them
(leftmost, longest) and every other segment is encoded by sp.encode on its own.

Case file format (one record per line, text as hex prefixed with 'x'):
  special x<hex>           an added token, in order
  text x<hex>              a test string; then
  ids <id> ...             encode without BOS/EOS
  bos <id> ...             encode with BOS
  bose <id> ...            encode with BOS and EOS (strings under 12 characters)
  dec x<hex> | dec =       decode(ids); '=' when it equals the text
  decode <id> ...          a random id sequence; then
  out x<hex>               its reference decode

With `--external MODEL DIR` it instead writes references for another
tokenizer.model (LLaMA's, which is not committed) to DIR; the C test checks
them when ANYREF_TOKENIZER_REF_DIR=DIR is set.

Needs: apt-get install python3-sentencepiece;
       /usr/bin/python3 -m pip install --break-system-packages tokenizers
Run from the repository root: /usr/bin/python3 tests/ref/make_tokenizer_fixtures.py
"""
import os
import random
import struct
import sys

import sentencepiece as spm
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors

OUT = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] != "--external" else "tests/fixtures"
SPECIALS = ["[SEG]", "<im_start>", "<im_end>", "<ref_start>", "<ref_end>",
            "<audio_start>", "<audio_end>"]
WS = "\u2581"

# ---------------------------------------------------------------- corpus
WORDS = ("the a an of to in is it that was for on are as with his they at be this from "
         "have or by one had not but what all were when we there can your which their said "
         "if do will each about how up out them then she many some so these would other into "
         "has more her two like him see time could no make than first been its who now people "
         "my made over did down only way find use may water long little very after words "
         "called just where most know get through back much before go good new write our used "
         "me man too any day same right look think also around another came come work three "
         "word must because does part even place well such here take why things help put years "
         "different away again off went old number great tell men say small every found still "
         "between name should home big give air line set own under read last never us left end "
         "along while might next sound below saw something thought both few those always looked "
         "show large often together asked house don't world going want school important until "
         "segment mask object image region person dog cat horse car umbrella giraffe zebra "
         "referring expression audio sound guitar piano violin baby laughing engine").split()
ACCENTED = "café naïve Zürich façade résumé piñata São Paulo Øresund Łódź crème brûlée jalapeño".split()
OTHER = ["中文", "字符", "测试", "日本語", "のテキスト", "한국어", "Ελληνικά", "русский", "العربية",
         "עברית", "हिन्दी", "😀", "🎉", "👍🏽", "🏳️‍🌈", "∑x²", "→", "…", "—", "«quote»", "€100"]
PUNCT = list(".,;:!?()[]{}'\"-/")


def rand_number(r):
    return str(r.randint(0, 10 ** r.randint(1, 7)))


def corpus_line(r):
    parts = []
    for _ in range(r.randint(3, 25)):
        x = r.random()
        if x < 0.70:
            w = r.choice(WORDS)
            parts.append(w.capitalize() if r.random() < 0.1 else w)
        elif x < 0.78:
            parts.append(r.choice(ACCENTED))
        elif x < 0.84:
            parts.append(r.choice(OTHER))
        elif x < 0.90:
            parts.append(rand_number(r))
        elif x < 0.95:
            parts.append(r.choice(SPECIALS))
        else:
            parts.append(r.choice(PUNCT))
    out = ""
    for i, p in enumerate(parts):
        if i:
            y = r.random()
            out += " " if y < 0.85 else ("  " if y < 0.92 else ("\t" if y < 0.96 else "   "))
        out += p
    if r.random() < 0.3:
        out += r.choice([".", "?", "!", " ."])
    return out


def corpus(seed, n):
    r = random.Random(seed)
    return [corpus_line(r) for _ in range(n)]


# ---------------------------------------------------------------- tiny protobuf reader/writer (model rewrite)
def read_varint(b, i):
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return v, i


def varint(v):
    out = bytearray()
    while True:
        c = v & 0x7F
        v >>= 7
        if v:
            out.append(c | 0x80)
        else:
            out.append(c)
            return bytes(out)


def fields(b):
    """[(field number, wire type, raw value bytes or int)] of one message."""
    i, out = 0, []
    while i < len(b):
        key, i = read_varint(b, i)
        f, wt = key >> 3, key & 7
        if wt == 0:
            v, i = read_varint(b, i)
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 2:
            n, i = read_varint(b, i)
            v, i = b[i:i + n], i + n
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise ValueError("wire type %d" % wt)
        out.append((f, wt, v))
    return out


def encode_field(f, wt, v):
    key = varint(f << 3 | wt)
    if wt == 0:
        return key + varint(v)
    if wt == 2:
        return key + varint(len(v)) + v
    return key + v


def set_piece_types(model_bytes, new_types):
    """Returns the model with pieces[i].type = new_types[i] for the given ids."""
    out, idx = bytearray(), 0
    for f, wt, v in fields(model_bytes):
        if f == 1 and wt == 2:
            if idx in new_types:
                sub = [(ff, ww, vv) for ff, ww, vv in fields(v) if ff != 3]
                sub.append((3, 0, new_types[idx]))
                v = b"".join(encode_field(*x) for x in sub)
            idx += 1
        out += encode_field(f, wt, v)
    return bytes(out)


# ---------------------------------------------------------------- training
def train(lines, **kw):
    buf = __import__("io").BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf,
                                   model_type="bpe", normalization_rule_name="identity",
                                   num_threads=2, minloglevel=2, **kw)
    return buf.getvalue()


# ---------------------------------------------------------------- test strings
SYSTEM = ("You are LLaVA, a large language and vision assistant trained by UW Madison WAIV Lab."
          "You are able to understand the visual content that the user provides, and assist the "
          "user with a variety of tasks using natural language.Follow the instructions carefully "
          "and explain your answers in detail.")
HAND = [
    "", " ", "  ", "   ", "\n", "\n\n", "\t", " \t \n ", "\r\n", "a", "ab", "abc", "hello",
    "Hello world", " Hello world", "Hello world ", "  leading two", "trailing two  ",
    "Hello, World!", "multiple     spaces   between words", "tabs\tand\ttabs", "line1\nline2\r\nline3",
    "café naïve Zürich façade", "crème brûlée", "中文字符测试", "日本語のテキスト", "한국어",
    "emoji 😀🎉👍🏽 and 🏳️‍🌈", "digits 1234567890 and 3.14159", "12345", "2024-01-31", "x=1+2*3",
    "mixed: Ελληνικά, русский, العربية, עברית, हिन्दी", "ﬁ ligature", "combining e\u0301",
    "zero\u200bwidth", "\u00a0nbsp", "\u3000ideographic space", "NUL\x00inside", "\x01\x02\x7f",
    WS, WS + WS + " x", "▁hello", "<unk>", "<s>", "</s>", "<0x41>", "<pad>", "<ctrl>",
    "<ud>", "a<ud>b", " <ud> ", "<ud><ud>", "<u d>",
    "[SEG]", "It is [SEG].", "the dog[SEG].", "[SEG][SEG]", " [SEG] ", "[SEG", "SEG]", "[[SEG]]",
    "<im_start><im_end>", "<im_start> image <im_end>", "<ref_start><ref_end>",
    "<audio_start>sound<audio_end>", "<im_start", "<im_startx>",
    "Can you segment the left man in this image?",
    "USER: <im_start>x<im_end> Can you segment the zebra in this image? ASSISTANT: It is [SEG].</s>",
    SYSTEM + " USER: hi ASSISTANT: hello</s>",
    "Can you segment object with the following audio <audio_start><audio_end> in this image?",
    "Can you provide a description of the region <ref_start><ref_end> in this image?",
    " ".join(["the quick brown fox jumps over the lazy dog 42 times"] * 4),
    "a" * 60, " " * 20, "\n" * 10, "😀" * 8,
]


def random_strings(seed, n):
    r = random.Random(seed)
    pool = (WORDS[:60] + ACCENTED + OTHER + PUNCT + SPECIALS + [" ", "  ", "\t", "\n", "0", "7", "99",
            "<ud>", "\u00e9", "\u4e00", "\U0001f600", "\u2581", "\x00", "\u00a0", "x", "q", "zz", "<", ">"])
    out = []
    for _ in range(n):
        k = r.randint(1, 16)
        s = "".join(r.choice(pool) + (" " if r.random() < 0.5 else "") for _ in range(k))
        if r.random() < 0.2:
            s = " " + s
        out.append(s)
    return out


def split_specials(text):
    """Leftmost-longest split of text on SPECIALS: [(is_special, str)]."""
    out, i, start = [], 0, 0
    while i < len(text):
        best = None
        for s in SPECIALS:
            if text.startswith(s, i) and (best is None or len(s) > len(best)):
                best = s
        if best is None:
            i += 1
            continue
        if i > start:
            out.append((False, text[start:i]))
        out.append((True, best))
        i += len(best)
        start = i
    if start < len(text):
        out.append((False, text[start:]))
    return out


class SpRef:
    """sp.encode / sp.decode with SPECIALS appended after the base vocabulary."""

    def __init__(self, model_bytes):
        self.sp = spm.SentencePieceProcessor(model_proto=model_bytes)
        self.n = self.sp.get_piece_size()
        self.special_id = {s: self.n + i for i, s in enumerate(SPECIALS)}
        # a normal piece that decodes to itself (no leading ▁), used below
        self.plain = next(i for i in range(self.n)
                          if not self.sp.is_control(i) and not self.sp.is_unknown(i)
                          and not self.sp.is_byte(i) and not self.sp.is_unused(i)
                          and self.sp.id_to_piece(i).isalpha() and len(self.sp.id_to_piece(i)) == 1)

    def encode(self, text):
        ids = []
        for special, seg in split_specials(text):
            ids += [self.special_id[seg]] if special else self.sp.encode(seg)
        return ids

    def decode(self, ids):
        """Decoding in segments between added ids; after any output the next
        segment must not lose its leading space, so it is decoded behind a
        one-letter piece that is then cut off."""
        out, seg, first = "", [], True
        names = {v: k for k, v in self.special_id.items()}

        def flush():
            nonlocal out, seg
            if first or out == "":
                out += self.sp.decode(seg)
            elif seg:
                out += self.sp.decode([self.plain] + seg)[1:]
            seg = []
        for i in ids:
            if i in names:
                flush()
                first = False
                out += names[i]
            else:
                seg.append(i)
        flush()
        return out


def hx(s):
    return "x" + s.encode("utf-8").hex()


def ids_line(tag, ids):
    return " ".join([tag] + [str(i) for i in ids])


def write_cases(path, model_name, strings, enc, enc_bos, enc_bose, dec, decode_seqs):
    lines = ["# generated by tests/ref/make_tokenizer_fixtures.py from %s — do not edit" % model_name]
    lines += ["special " + hx(s) for s in SPECIALS]
    for s in strings:
        ids = enc(s)
        d = dec(ids)
        lines += ["text " + hx(s), ids_line("ids", ids), ids_line("bos", enc_bos(s))]
        if len(s) < 12:
            lines.append(ids_line("bose", enc_bose(s)))
        lines.append("dec =" if d == s else "dec " + hx(d))
    for ids in decode_seqs:
        lines += [ids_line("decode", ids), "out " + hx(dec(ids))]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def random_id_seqs(seed, n_total, count):
    r = random.Random(seed)
    seqs = [[], [1], [2], [0], [1, 2]]
    while len(seqs) < count:
        seq = []
        for _ in range(r.randint(1, 14)):
            x = r.random()
            if x < 0.35:
                seq.append(r.randrange(3, 259))        # byte pieces (or low pieces)
            elif x < 0.45:
                seq.append(r.randrange(0, 3))          # unk, bos, eos
            elif x < 0.55:
                seq.append(r.randrange(n_total - len(SPECIALS), n_total))
            else:
                seq.append(r.randrange(0, n_total - len(SPECIALS)))
        seqs.append(seq)
    return seqs


# ---------------------------------------------------------------- HF tokenizer.json
def merges_from_sp(sp):
    """Every split (l, r) of every piece with both halves in the vocabulary,
    ordered by the piece's score (highest first), ties by (id of l, id of r)."""
    n = sp.get_piece_size()
    vocab = {sp.id_to_piece(i): i for i in range(n)}
    score = {}
    for i in range(n):
        score[sp.id_to_piece(i)] = 0.0 if i < 3 else sp.get_score(i)
    merges = []
    for piece, sc in score.items():
        local = [(piece[:k], piece[k:], sc) for k in range(1, len(piece))
                 if piece[:k] in vocab and piece[k:] in vocab]
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges += local
    merges.sort(key=lambda m: m[2], reverse=True)
    return vocab, [(a, b) for a, b, _ in merges]


def hf_tokenizer(sp, template, user_defined=("<ud>",)):
    vocab, merges = merges_from_sp(sp)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True,
                               byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(WS), normalizers.Replace(" ", WS)])
    tok.decoder = decoders.Sequence([decoders.Replace(WS, " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(
        single=template, pair="<s> $A <s> $B", special_tokens=[("<s>", 1), ("</s>", 2)])
    tok.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in ("<unk>", "<s>", "</s>")])
    tok.add_tokens([AddedToken(u, normalized=True, special=False) for u in user_defined])
    return tok


def write_json_cases(ref, strings, seqs, out, json_name, cases_name, user_defined):
    """The model of `ref` as tokenizer.json plus its `tokenizers` references."""
    path = os.path.join(out, json_name)
    hf_tokenizer(ref.sp, "<s> $A", user_defined).save(path)
    tok = Tokenizer.from_file(path)
    tok_e = Tokenizer.from_file(path)
    tok_e.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A <s> $B", special_tokens=[("<s>", 1), ("</s>", 2)])
    for t in (tok, tok_e):
        t.add_tokens([AddedToken(s, normalized=False, special=False) for s in SPECIALS])
    assert tok.token_to_id(SPECIALS[0]) == ref.n
    write_cases(os.path.join(out, cases_name), json_name, strings,
                lambda s: tok.encode(s, add_special_tokens=False).ids,
                lambda s: tok.encode(s).ids, lambda s: tok_e.encode(s).ids,
                lambda ids: tok.decode(ids, skip_special_tokens=True), seqs)
    same = sum(tok.encode(s, add_special_tokens=False).ids == ref.encode(s) for s in strings)
    print("%s vs sentencepiece: %d/%d strings encode to the same ids" % (json_name, same, len(strings)))


def external(model_path, out):
    """References for a tokenizer.model that is not committed (e.g. LLaMA's):
    writes out/tokenizer.model, out/tokenizer.json and the two case files that
    tests/test_tokenizer.c reads when ANYREF_TOKENIZER_REF_DIR=out is set."""
    os.makedirs(out, exist_ok=True)
    with open(model_path, "rb") as f:
        model = f.read()
    with open(os.path.join(out, "tokenizer.model"), "wb") as f:
        f.write(model)
    ref = SpRef(model)
    strings = HAND + random_strings(7, 70)
    bos, eos = ref.sp.bos_id(), ref.sp.eos_id()
    seqs = random_id_seqs(13, ref.n + len(SPECIALS), 60)
    write_cases(os.path.join(out, "tok_cases_model.txt"), "tokenizer.model", strings, ref.encode,
                lambda s: [bos] + ref.encode(s), lambda s: [bos] + ref.encode(s) + [eos], ref.decode, seqs)
    user = [ref.sp.id_to_piece(i) for i in range(ref.n) if ref.sp.is_user_defined(i)] if hasattr(ref.sp, "is_user_defined") else []
    write_json_cases(ref, strings, seqs, out, "tokenizer.json", "tok_cases_json.txt", user)


def main():
    os.makedirs(OUT, exist_ok=True)
    strings = HAND + random_strings(7, 70)

    # LLaMA-like model
    bpe = train(corpus(1, 4000), vocab_size=512, byte_fallback=True, add_dummy_prefix=True,
                remove_extra_whitespaces=False, split_digits=True, allow_whitespace_only_pieces=True,
                user_defined_symbols=["<ud>"], character_coverage=0.995, max_sentencepiece_length=16)
    with open(os.path.join(OUT, "tok_bpe.model"), "wb") as f:
        f.write(bpe)
    ref = SpRef(bpe)
    bos, eos = ref.sp.bos_id(), ref.sp.eos_id()
    seqs = random_id_seqs(11, ref.n + len(SPECIALS), 60)
    write_cases(os.path.join(OUT, "tok_cases_bpe_model.txt"), "tok_bpe.model", strings, ref.encode,
                lambda s: [bos] + ref.encode(s), lambda s: [bos] + ref.encode(s) + [eos], ref.decode, seqs)
    for s in strings:   # the plain encode of sentencepiece itself agrees where no added token occurs
        if not any(x in s for x in SPECIALS):
            assert ref.sp.encode(s, add_bos=True) == [bos] + ref.encode(s)

    write_json_cases(ref, strings, seqs, OUT, "tok_bpe.json", "tok_cases_bpe_json.txt", ("<ud>",))

    # the other normaliser branches, no byte fallback, UNUSED pieces
    rws = train(corpus(2, 3000), vocab_size=300, byte_fallback=False, add_dummy_prefix=False,
                remove_extra_whitespaces=True, split_digits=False, control_symbols=["<ctrl>"],
                character_coverage=0.98)
    sp = spm.SentencePieceProcessor(model_proto=rws)
    multi = [i for i in range(sp.get_piece_size()) if not sp.is_control(i) and not sp.is_unknown(i)
             and len(sp.id_to_piece(i)) >= 3]
    unused = {multi[5]: 5, multi[17]: 5, multi[40]: 5, multi[len(multi) // 2]: 5}
    rws = set_piece_types(rws, unused)
    with open(os.path.join(OUT, "tok_rws.model"), "wb") as f:
        f.write(rws)
    ref = SpRef(rws)
    assert all(ref.sp.is_unused(i) for i in unused)
    bos, eos = ref.sp.bos_id(), ref.sp.eos_id()
    seqs = random_id_seqs(12, ref.n + len(SPECIALS), 40)
    write_cases(os.path.join(OUT, "tok_cases_rws_model.txt"), "tok_rws.model", strings, ref.encode,
                lambda s: [bos] + ref.encode(s), lambda s: [bos] + ref.encode(s) + [eos], ref.decode, seqs)
    print("unused pieces in tok_rws.model:", sorted(unused))
    for name in sorted(os.listdir(OUT)):
        if name.startswith("tok_"):
            print("%-26s %7d bytes" % (name, os.path.getsize(os.path.join(OUT, name))))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--external":
        external(sys.argv[2], sys.argv[3])
    else:
        main()
