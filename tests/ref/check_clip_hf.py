#!/usr/bin/python3
"""tests/ref/check_clip_hf.py — checks tests/ref/clip_ref.py (the plain-torch
CLIP reference behind tests/fixtures/clip.h5) once against the real Hugging
Face CLIPVisionModel and LLaVA-style projectors built from torch.nn modules.
Run by hand, not by `make test` (it needs transformers):

    /usr/bin/python3 -m venv --system-site-packages /work/wt/venv-clip
    /work/wt/venv-clip/bin/pip install transformers==4.36.2    # works with Debian's torch 1.13
    /work/wt/venv-clip/bin/python tests/ref/check_clip_hf.py tests/fixtures/clip.h5

It builds CLIPVisionModel(CLIPVisionConfig(...)) with the fixture's tiny sizes,
loads the fixture's weights by their names (LLaVA's prefix stripped down to
vision_model.*; strict, so every HF tensor must be there and vice versa),
runs it in float64 with output_hidden_states=True for both hidden_act values,
and asserts every hidden state equals the fixture's to 1e-12 relative. It then
rebuilds both mm_projector forms as LLaVA does (nn.Linear; nn.Sequential of
Linear, GELU, Linear), runs them on hidden_states[-2][:, 1:] and checks the
outputs and autograd gradients against the fixture. Prints one line per check;
exits non-zero on a mismatch.
"""
import sys

import h5py
import numpy as np
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

PFX = "model.vision_tower.vision_tower.vision_model."
PPFX = "model.mm_projector."
TOL = 1e-12
failed = 0


def check(name, got, want):
    global failed
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    ok = got.shape == want.shape
    err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-300)) if ok else float("inf")
    ok = ok and err <= TOL
    failed += not ok
    print("%s %s max rel err %.1e" % ("ok  " if ok else "FAIL", name, err))


def main(path):
    import transformers
    print("# transformers %s, torch %s" % (transformers.__version__, torch.__version__))
    f = h5py.File(path, "r")
    a = f.attrs
    sd = {"vision_model." + k[len(PFX):]: torch.from_numpy(f["params"][k][()])
          for k in f["params"].keys() if k.startswith(PFX)}
    assert len(sd) == len(f["params"].keys()), "a params/ tensor lacks the LLaVA prefix"
    pixels = torch.from_numpy(f["pixels"][()])
    for act in ("quick_gelu", "gelu"):
        cfg = CLIPVisionConfig(hidden_size=int(a["width"]), intermediate_size=int(a["mlp_dim"]),
                               num_hidden_layers=int(a["layers"]), num_attention_heads=int(a["heads"]),
                               num_channels=int(a["channels"]), image_size=int(a["image_size"]),
                               patch_size=int(a["patch"]), hidden_act=act, layer_norm_eps=float(a["eps"]),
                               attention_dropout=0.0)
        model = CLIPVisionModel(cfg).double().eval()
        missing, unexpected = model.load_state_dict(sd, strict=False)
        # position_ids is a buffer some versions keep in the state dict; nothing else may differ
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            print("FAIL %s state dict: missing %s, unexpected %s" % (act, missing, unexpected))
            sys.exit(1)
        with torch.no_grad():
            hs = model(pixel_values=pixels, output_hidden_states=True).hidden_states
        want = f[act + "/hidden"][()]
        check("%s hidden states: %d of them" % (act, len(hs)), torch.stack(hs).numpy(), want)
        if act != "quick_gelu":
            continue
        feats = hs[-2][:, 1:].reshape(-1, hs[-2].shape[-1])   # LLaVA: select_layer -2, 'patch'
        W, D = feats.shape[1], int(a["proj_dim"])
        for form in ("linear", "mlp2x_gelu"):
            if form == "linear":
                proj = torch.nn.Linear(W, D)
            else:
                proj = torch.nn.Sequential(torch.nn.Linear(W, D), torch.nn.GELU(), torch.nn.Linear(D, D))
            proj = proj.double()
            g = f[form + "/params"]
            proj.load_state_dict({k[len(PPFX):]: torch.from_numpy(g[k][()]) for k in g.keys()}, strict=True)
            x = feats.clone().requires_grad_(True)
            out = proj(x)
            (out * torch.from_numpy(f[form + "/r"][()])).sum().backward()
            check(form + " out", out.detach().numpy(), f[form + "/out"][()])
            check(form + " grad in", x.grad.numpy(), f[form + "/grads/in"][()])
            for k, v in proj.named_parameters():
                check(form + " grad " + k, v.grad.numpy(), f[form + "/grads/" + PPFX + k][()])
    print("%s" % ("all equal" if not failed else "%d mismatches" % failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/clip.h5")
