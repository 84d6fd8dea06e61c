"""tests/ref/refer_ref.py — fixtures for tests/test_refer.c (data/pickle.c, data/refer.c).

    /usr/bin/python3 tests/ref/refer_ref.py tests/fixtures/refer

Writes, under OUT:
  root/<dataset>/refs(<splitBy>).p   small synthetic REFER trees, one pickle flavour each:
      refcoco/refs(unc).p        as Python 2's cPickle writes protocol 2 (emulated
                                 byte by byte: str as SHORT_BINSTRING/BINSTRING, unicode
                                 as BINUNICODE, BININT1/2/BININT, big ints as INT lines,
                                 longs as LONG1, BINPUT/LONG_BINPUT and BINGET/LONG_BINGET
                                 memo, batched APPENDS/SETITEMS)
      refclef/refs(unc).p        as Python 2 writes protocol 0 (emulated: "(dp0", S'...'
                                 reprs, V raw-unicode-escape, I01 for True, L..L longs, p/g memo)
      refcoco+/refs(unc).p       Python 3 pickle, protocol 4 (FRAME, MEMOIZE, SHORT_BINUNICODE)
                                 with 3 broken refs that the loader must skip
      refcocog/refs(umd).p       Python 3, protocol 5
      refcocog/refs(google).p    Python 3, protocol 2
      refclef/refs(berkeley).p   Python 3, protocol 0
    each with refs(<splitBy>).json: {"n_total": N, "skipped": [indices], "refs": [kept refs]}
    (the refs as Python loads them with pickle.load(f, encoding="latin1")).
  values_<flavour>.p + .canon  a tree of every value kind at protocols 0-5 and the two
    emulated Python 2 flavours; .canon is the tree in the canonical byte form that
    test_refer.c prints (see canon()).
  bad/*.p + bad/cases.txt      malformed pickles, one per line "<file>\t<text the error must contain>".
Every emulated Python 2 pickle is checked to load in Python 3 (encoding="latin1") to the
expected value before it is written. Deterministic (fixed seeds).
"""
import io
import json
import math
import os
import pickle
import pickletools
import random
import struct
import sys


class Py2Str(bytes):
    """A Python 2 byte string (str): emulated pickles write it as (SHORT_)BINSTRING / STRING."""


def loaded(v):
    """What Python 3 returns for v with encoding='latin1'."""
    if isinstance(v, Py2Str):
        return bytes(v).decode("latin1")
    if isinstance(v, list):
        return [loaded(x) for x in v]
    if isinstance(v, tuple):
        return tuple(loaded(x) for x in v)
    if isinstance(v, dict):
        return {loaded(k): loaded(x) for k, x in v.items()}
    return v


class Py2Pickler:
    """Writes plain data as Python 2.7's cPickle would, at protocol 0 or 2."""

    def __init__(self, proto):
        self.proto = proto
        self.out = io.BytesIO()
        self.memo = {}  # key -> index; strings by value (interned), containers by id

    def w(self, b):
        self.out.write(b)

    def put(self, key):
        i = len(self.memo)
        self.memo[key] = i
        if self.proto == 0:
            self.w(b"p%d\n" % i)
        elif i < 256:
            self.w(b"q" + bytes([i]))
        else:
            self.w(b"r" + struct.pack("<I", i))

    def get(self, key):
        i = self.memo[key]
        if self.proto == 0:
            self.w(b"g%d\n" % i)
        elif i < 256:
            self.w(b"h" + bytes([i]))
        else:
            self.w(b"j" + struct.pack("<I", i))

    def dumps(self, obj):
        if self.proto == 2:
            self.w(b"\x80\x02")
        self.save(obj)
        self.w(b".")
        return self.out.getvalue()

    def save(self, v):
        p = self.proto
        if v is None:
            self.w(b"N")
        elif v is True or v is False:
            self.w((b"\x88" if v else b"\x89") if p >= 2 else (b"I01\n" if v else b"I00\n"))
        elif isinstance(v, int):
            if -2**63 <= v < 2**63 and not (isinstance(v, Long)):
                if p >= 1 and 0 <= v <= 0xFF:
                    self.w(b"K" + bytes([v]))
                elif p >= 1 and 0 <= v <= 0xFFFF:
                    self.w(b"M" + struct.pack("<H", v))
                elif p >= 1 and -2**31 <= v < 2**31:
                    self.w(b"J" + struct.pack("<i", v))
                else:
                    self.w(b"I%d\n" % v)  # Python 2 ints beyond 32 bits, at any protocol
            elif p >= 2:
                n = (v.bit_length() + 8) // 8 if v else 0
                b = v.to_bytes(n, "little", signed=True) if n else b""
                # minimal: drop a redundant sign byte as Python 2's encode_long does
                while len(b) > 1 and ((b[-1] == 0 and b[-2] < 0x80) or (b[-1] == 0xFF and b[-2] >= 0x80)):
                    b = b[:-1]
                self.w(b"\x8a" + bytes([len(b)]) + b)
            else:
                self.w(b"L%dL\n" % v)
        elif isinstance(v, float):
            self.w(b"G" + struct.pack(">d", v) if p >= 1 else b"F" + repr(v).encode() + b"\n")
        elif isinstance(v, Py2Str):
            key = ("s", bytes(v))
            if key in self.memo:
                return self.get(key)
            if p == 0:
                self.w(b"S" + repr(bytes(v))[1:].encode("latin1") + b"\n")
            elif len(v) < 256:
                self.w(b"U" + bytes([len(v)]) + bytes(v))
            else:
                self.w(b"T" + struct.pack("<i", len(v)) + bytes(v))
            self.put(key)
        elif isinstance(v, str):
            key = ("u", v)
            if key in self.memo:
                return self.get(key)
            if p == 0:
                esc = v.replace("\\", "\\u005c").replace("\n", "\\u000a")
                self.w(b"V" + esc.encode("raw_unicode_escape") + b"\n")
            else:
                b = v.encode("utf-8")
                self.w(b"X" + struct.pack("<I", len(b)) + b)
            self.put(key)
        elif isinstance(v, tuple):
            key = ("id", id(v))
            if key in self.memo:
                return self.get(key)
            if p >= 2 and len(v) == 0:
                self.w(b")")
                return
            if p >= 2 and len(v) <= 3:
                for x in v:
                    self.save(x)
                self.w(bytes([0x84 + len(v)]))
            else:
                self.w(b"(")
                for x in v:
                    self.save(x)
                self.w(b"t")
            self.put(key)
        elif isinstance(v, list):
            key = ("id", id(v))
            if key in self.memo:
                return self.get(key)
            self.w(b"]" if p >= 1 else b"(l")
            self.put(key)
            if p == 0:
                for x in v:
                    self.save(x)
                    self.w(b"a")
            else:
                for i in range(0, len(v), 1000):
                    batch = v[i:i + 1000]
                    if len(batch) == 1:
                        self.save(batch[0])
                        self.w(b"a")
                    else:
                        self.w(b"(")
                        for x in batch:
                            self.save(x)
                        self.w(b"e")
        elif isinstance(v, dict):
            key = ("id", id(v))
            if key in self.memo:
                return self.get(key)
            self.w(b"}" if p >= 1 else b"(d")
            self.put(key)
            items = list(v.items())
            if p == 0:
                for k, x in items:
                    self.save(k)
                    self.save(x)
                    self.w(b"s")
            else:
                for i in range(0, len(items), 1000):
                    batch = items[i:i + 1000]
                    if len(batch) == 1:
                        self.save(batch[0][0])
                        self.save(batch[0][1])
                        self.w(b"s")
                    else:
                        self.w(b"(")
                        for k, x in batch:
                            self.save(k)
                            self.save(x)
                        self.w(b"u")
        else:
            raise TypeError(type(v))


class Long(int):
    """A Python 2 long (written as LONG1 / L...L even when small)."""


def py2_dumps(obj, proto):
    data = Py2Pickler(proto).dumps(obj)
    back = pickle.loads(data, encoding="latin1")
    assert back == loaded(obj), "emulated Python 2 pickle does not load back"
    return data


def canon(v):
    """The canonical bytes test_refer.c prints for a pickle value."""
    if v is None:
        return b"N"
    if v is True:
        return b"T"
    if v is False:
        return b"F"
    if isinstance(v, int):
        return b"i%d" % v
    if isinstance(v, float):
        return b"f%016x" % struct.unpack("<Q", struct.pack("<d", v))[0]
    if isinstance(v, str):
        b = v.encode("utf-8")
        return b"s%d:" % len(b) + b
    if isinstance(v, (bytes, bytearray)):
        return b"b%d:" % len(v) + bytes(v)
    if isinstance(v, list):
        return b"[" + b",".join(canon(x) for x in v) + b"]"
    if isinstance(v, tuple):
        return b"(" + b",".join(canon(x) for x in v) + b")"
    if isinstance(v, dict):
        return b"{" + b",".join(canon(k) + b":" + canon(x) for k, x in v.items()) + b"}"
    raise TypeError(type(v))


# ---- REFER trees ---------------------------------------------------------------------------------

WORDS = ["the", "man", "woman", "left", "right", "red", "shirt", "dog", "on", "in", "blue", "car", "near",
         "small", "big", "cup", "guy", "with", "hat", "second", "from", "top"]
UNICODE_SENTS = ["the café on the left", "naïve guy with a hat", "日本の車 in front", "🐶 dog next to the cup",
                 "zebra — far right", "the ß-shaped sign"]


def make_refs(rng, dataset, splits, n, py2=False, first_ref=0):
    """n refs in refer's layout. py2: ASCII strings as Python 2 str, the rest unicode."""
    def S(s):
        if py2:
            try:
                return Py2Str(s.encode("ascii"))
            except UnicodeEncodeError:
                return s
        return s

    refs = []
    sent_id = first_ref * 3
    for i in range(n):
        ref_id = first_ref + i
        if dataset == "refclef":
            image_id = rng.choice([7, 25, 999, 1000, 17581, 25092, 39999])
            ann_id = image_id * 10 + rng.randrange(10)
            file_name = "%d_%d.jpg" % (image_id, rng.randrange(1, 9))
            category_id = rng.randrange(1, 250)
        else:
            image_id = rng.choice([9, 581857, 98304, 123456, 500000])
            ann_id = rng.choice([3007, 1719310, 2147483647, 900100581857, 5])
            file_name = "COCO_train2014_%012d_%d.jpg" % (image_id, rng.randrange(1, 40))
            category_id = rng.randrange(1, 91)
        sents = []
        for j in range(1 + (i % 3)):
            if (i + j) % 4 == 1:
                sent = UNICODE_SENTS[(i + j) % len(UNICODE_SENTS)]
            elif i == n - 1 and j == 0:
                sent = "the very last last one"  # a word first seen late, twice (LONG_BINGET)
            else:
                sent = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 7)))
            tokens = sent.split(" ")
            raw = sent.upper() if j % 2 == 0 else sent + " "
            sents.append({S("tokens"): [S(t) for t in tokens], S("raw"): S(raw), S("sent_id"): sent_id,
                          S("sent"): S(sent)})
            sent_id += 1
        refs.append({S("sent_ids"): [s[S("sent_id")] for s in sents], S("file_name"): S(file_name),
                     S("ann_id"): ann_id, S("ref_id"): ref_id, S("image_id"): image_id,
                     S("split"): S(splits[i % len(splits)]), S("sentences"): sents,
                     S("category_id"): category_id})
    return refs


def get_ref_ids(refs, split):
    """refer.py's REFER.getRefIds(split=...) on a list of refs."""
    if split in ["testA", "testB", "testC"]:
        return [r["ref_id"] for r in refs if split[-1] in r["split"]]
    if split in ["testAB", "testBC", "testAC"]:
        return [r["ref_id"] for r in refs if r["split"] == split]
    if split == "test":
        return [r["ref_id"] for r in refs if "test" in r["split"]]
    if split in ["train", "val"]:
        return [r["ref_id"] for r in refs if r["split"] == split]
    raise ValueError(split)


SPLITS = ["train", "val", "test", "testA", "testB", "testC", "testAB", "testBC", "testAC"]


def write_refs(root, dataset, split_by, refs, dump, skipped=()):
    d = os.path.join(root, dataset)
    os.makedirs(d, exist_ok=True)
    data = dump(refs)
    back = pickle.loads(data, encoding="latin1")
    assert back == loaded(refs)
    with open(os.path.join(d, "refs(%s).p" % split_by), "wb") as f:
        f.write(data)
    kept = [r for i, r in enumerate(back) if i not in skipped]
    with open(os.path.join(d, "refs(%s).json" % split_by), "w", encoding="utf-8") as f:
        json.dump({"n_total": len(back), "skipped": sorted(skipped), "refs": kept,
                   "splits": {sp: get_ref_ids(kept, sp) for sp in SPLITS}}, f, ensure_ascii=False, indent=0)
    return data


def values_tree(proto):
    shared = [1, "shared"]
    big = {("k%02d" % i): i * i for i in range(40)}
    v = {
        "none": None, "t": True, "f": False,
        "ints": [0, 1, -1, 255, 256, 65535, 65536, 2**31 - 1, -2**31, 2**31, -2**31 - 1, 2**62, 2**63 - 1, -2**63],
        "floats": [0.0, -0.0, 1.5, 1e-300, 5e-324, 1e300, math.inf, -math.inf, math.pi, float("nan")],
        "strs": ["", "a", "café", "日本", "🐶", "x" * 300, "line\nbreak\\back slash", "quote'\"both", "\x00nul",
                 "\\u0041 not an escape"],
        "tuples": [(), (1,), (1, "b"), (1, 2, 3), (1, 2, 3, 4)],
        "nested": [[[[]]], {}],
        "intkeys": {1: "one", -2: "minus two", 2**40: "big"},
        "shared": [shared, shared],
        "big": big,
    }
    if proto >= 3:
        v["bytes"] = [b"", b"\x00\xff", b"y" * 300]
    if proto >= 5:
        v["bytearray"] = bytearray(b"ba\x01")
    return v


def values_py2():
    shared = [Py2Str(b"s")]
    return {
        Py2Str(b"none"): None, Py2Str(b"t"): True, Py2Str(b"f"): False,
        Py2Str(b"ints"): [0, 1, -1, 255, 256, 65535, 65536, 2**31 - 1, -2**31, 2**31, 2**62, -2**63,
                          Long(0), Long(5), Long(-1), Long(255), Long(2**63 - 1), Long(-2**63)],
        Py2Str(b"floats"): [0.0, -0.0, 1.5, 1e-300, 1e300, math.pi],
        Py2Str(b"bytestr"): [Py2Str(b""), Py2Str(b"ascii"), Py2Str(b"caf\xe9 latin-1"), Py2Str(b"tab\tnl\nq'\"\\"),
                             Py2Str(b"\x00\x01\x7f\x80\xff"), Py2Str(b"z" * 300)],
        Py2Str(b"unicode"): ["caf\u00e9", "日本", "🐶", "back\\slash\nnewline", "\\u0041"],
        Py2Str(b"tuples"): [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4)],
        Py2Str(b"shared"): [shared, shared],
        Py2Str(b"big"): {Py2Str(b"k%02d" % i): i for i in range(30)},
    }


def bad_cases(good2, good4):
    """(name, bytes, expected error text)"""
    cases = []

    class Obj:
        pass

    import collections
    cases.append(("global_object.p", pickle.dumps(collections.OrderedDict(a=1), protocol=2), "unsupported opcode GLOBAL"))
    cases.append(("stack_global.p", pickle.dumps(collections.OrderedDict(a=1), protocol=4), "unsupported opcode STACK_GLOBAL"))
    cases.append(("bytes_p2.p", pickle.dumps(b"abc", protocol=2), "unsupported opcode GLOBAL"))
    cases.append(("set_p4.p", pickle.dumps({1, 2}, protocol=4), "unsupported opcode EMPTY_SET"))
    cases.append(("reduce.p", b"\x80\x02N)R.", "unsupported opcode REDUCE"))
    cases.append(("build.p", b"}N}b.", "unsupported opcode BUILD"))
    cases.append(("inst.p", b"(ios\nsystem\n.", "unsupported opcode INST"))
    cases.append(("persid.p", b"Pfoo\n.", "unsupported opcode PERSID"))
    cases.append(("ext1.p", b"\x80\x02\x82\x01.", "unsupported opcode EXT1"))
    cases.append(("next_buffer.p", b"\x80\x05\x97.", "unsupported opcode NEXT_BUFFER"))
    cases.append(("invalid_opcode.p", b"\x80\x02\xff.", "invalid opcode 0xff"))
    cases.append(("proto6.p", b"\x80\x06N.", "unsupported pickle protocol 6"))
    cases.append(("empty.p", b"", "ends before STOP"))
    cases.append(("no_stop.p", b"\x80\x02]q\x00.", None))  # valid: control case, parses
    cases.append(("binget_unset.p", b"\x80\x02]q\x00h\x05.", "memo key 5 is not defined"))
    cases.append(("long_binget_huge.p", b"\x80\x02]j\xff\xff\xff\xff.", "memo key 4294967295 is not defined"))
    cases.append(("long_binput_huge.p", b"\x80\x02]r\xff\xff\xff\x7f.", "memo index 2147483647 too large"))
    cases.append(("get_text_unset.p", b"(lp0\ng7\na.", "memo key 7 is not defined"))
    cases.append(("put_empty_stack.p", b"\x80\x02q\x00N.", "stack underflow"))
    cases.append(("binunicode_huge.p", b"\x80\x02X\xf0\xff\xff\xff" + b"abc.", "truncated: needs 4294967280 bytes"))
    cases.append(("binunicode8_huge.p", b"\x80\x04\x8d" + b"\xff" * 8 + b"x.", "truncated: needs 18446744073709551615"))
    cases.append(("binbytes8_huge.p", b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b".", "truncated"))
    cases.append(("binstring_negative.p", b"\x80\x02T\xff\xff\xff\xffab.", "negative byte count"))
    cases.append(("long4_negative.p", b"\x80\x02\x8b\xff\xff\xff\xff.", "negative byte count"))
    cases.append(("long1_too_big.p", b"\x80\x02\x8a\x09" + b"\x00" * 8 + b"\x01.", "does not fit in 64 bits"))
    cases.append(("int_too_big.p", b"I99999999999999999999\n.", "does not fit in 64 bits"))
    cases.append(("int_garbage.p", b"I12a\n.", "expected a decimal integer"))
    cases.append(("frame_too_long.p", b"\x80\x04\x95" + struct.pack("<Q", 1000) + b"N.", "frame of 1000 bytes"))
    cases.append(("bad_utf8.p", b"\x80\x04\x8c\x02\xc3\x28.", "invalid UTF-8"))
    cases.append(("utf8_surrogate.p", b"\x80\x04\x8c\x03\xed\xa0\x80.", "invalid UTF-8"))
    cases.append(("unicode_lone_surrogate.p", b"V\\ud800x\n.", "lone surrogate"))
    cases.append(("unicode_short_escape.p", b"V\\u12\n.", "truncated \\u escape"))
    cases.append(("string_unquoted.p", b"Sabc\n.", "must be quoted"))
    cases.append(("string_bad_x.p", b"S'\\xZZ'\n.", "invalid \\x escape"))
    cases.append(("append_to_dict.p", b"\x80\x02}K\x01a.", "expected a list on the stack, found a dict"))
    cases.append(("setitem_on_list.p", b"\x80\x02]K\x01K\x02s.", "expected a dict on the stack, found a list"))
    cases.append(("odd_setitems.p", b"\x80\x02}(K\x01u.", "odd number of items for SETITEMS"))
    cases.append(("odd_dict.p", b"(I1\nd.", "odd number of items for DICT"))
    cases.append(("list_key.p", b"\x80\x02}]K\x01s.", "dict key of type list"))
    cases.append(("float_key.p", b"\x80\x02}G\x3f\xf8\x00\x00\x00\x00\x00\x00K\x01s.", "dict key of type float"))
    cases.append(("appends_no_mark.p", b"\x80\x02]K\x01e.", "no MARK"))
    cases.append(("appends_under_mark.p", b"\x80\x02]((e.", "stack underflow"))
    cases.append(("stop_empty.p", b"\x80\x02.", "stack underflow"))
    cases.append(("tuple3_underflow.p", b"\x80\x02K\x01(K\x02K\x03\x87.", "stack underflow"))
    cases.append(("self_list.p", b"\x80\x02]q\x002a.", "contains itself"))
    cases.append(("self_dict.p", b"\x80\x02}q\x00K\x01h\x00s.", "contains itself"))
    cases.append(("deep.p", b"\x80\x02" + b"]" * 150 + b"a" * 149 + b".", "nested deeper than 100"))
    cases.append(("float_text_bad.p", b"F1.5x\n.", "expected a float"))
    cases.append(("no_newline.p", b"I12", "no end of line"))
    # A refs file that is not a list: the loader refuses it (the pickle itself is fine).
    cases.append(("refs_not_list.p", pickle.dumps({"ref_id": 1}, protocol=2), "expected a pickled list of refs"))
    return cases


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/refer"
    root = os.path.join(out, "root")
    rng = random.Random(20240607)

    # Python 2 cPickle, protocol 2 (the common case of the public files): > 256 memo entries.
    refs = make_refs(rng, "refcoco", ["train", "val", "testA", "testB"], 24, py2=True)
    data = write_refs(root, "refcoco", "unc", refs, lambda r: py2_dumps(r, 2))
    assert b"r" in data and any(op.name == "LONG_BINPUT" for op, _, _ in pickletools.genops(data))
    assert any(op.name == "LONG_BINGET" for op, _, _ in pickletools.genops(data))
    assert any(op.name == "BINSTRING" or op.name == "SHORT_BINSTRING" for op, _, _ in pickletools.genops(data))
    assert any(op.name == "INT" for op, _, _ in pickletools.genops(data))  # ids beyond 32 bits

    # Python 2, protocol 0.
    refs = make_refs(rng, "refclef", ["train", "val", "testA", "testB", "testC"], 10, py2=True, first_ref=100)
    write_refs(root, "refclef", "unc", refs, lambda r: py2_dumps(r, 0))

    # Python 3, protocol 4, with broken refs.
    refs = make_refs(rng, "refcoco+", ["train", "val", "testA", "testB", "testAB"], 12, first_ref=200)
    refs[3] = dict(refs[3]); del refs[3]["ann_id"]
    refs[7] = dict(refs[7]); refs[7]["sentences"] = []
    refs[9] = dict(refs[9]); refs[9]["sentences"] = [dict(refs[9]["sentences"][0], tokens=["ok", 5])]
    refs.append("not a dict")
    refs.append(dict(refs[0], image_id=True))
    write_refs(root, "refcoco+", "unc", refs, lambda r: pickle.dumps(r, protocol=4), skipped={3, 7, 9, 12, 13})

    refs = make_refs(rng, "refcocog", ["train", "val", "test"], 9, first_ref=300)
    write_refs(root, "refcocog", "umd", refs, lambda r: pickle.dumps(r, protocol=5))
    refs = make_refs(rng, "refcocog", ["train", "val"], 6, first_ref=400)
    write_refs(root, "refcocog", "google", refs, lambda r: pickle.dumps(r, protocol=2))
    refs = make_refs(rng, "refclef", ["train", "val", "test"], 7, first_ref=500)
    write_refs(root, "refclef", "berkeley", refs, lambda r: pickle.dumps(r, protocol=0))

    # Values at every protocol.
    for p in range(6):
        v = values_tree(p)
        data = pickle.dumps(v, protocol=p)
        with open(os.path.join(out, "values_p%d.p" % p), "wb") as f:
            f.write(data)
        with open(os.path.join(out, "values_p%d.canon" % p), "wb") as f:
            f.write(canon(pickle.loads(data)))
    for p in (0, 2):
        v = values_py2()
        data = py2_dumps(v, p)
        with open(os.path.join(out, "values_py2_p%d.p" % p), "wb") as f:
            f.write(data)
        with open(os.path.join(out, "values_py2_p%d.canon" % p), "wb") as f:
            f.write(canon(pickle.loads(data, encoding="latin1")))

    bad = os.path.join(out, "bad")
    os.makedirs(bad, exist_ok=True)
    with open(os.path.join(bad, "cases.txt"), "w") as lst:
        for name, data, err in bad_cases(None, None):
            with open(os.path.join(bad, name), "wb") as f:
                f.write(data)
            lst.write("%s\t%s\n" % (name, err if err is not None else "OK"))
    print("wrote", out)


if __name__ == "__main__":
    main()
