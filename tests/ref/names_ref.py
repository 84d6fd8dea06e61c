"""tests/ref/names_ref.py — the state_dict keys of AnyRefForCausalLM and of its
PEFT adapter for the tiny configuration of tests/test_names.c
(tests/tiny_anyref.h + tiny_refs_cfg + a 2-block SAM image encoder), written to
tests/fixtures/names_anyref_keys.txt, one "<kind> <name> <shape>" per line:
  full     a key of AnyRefForCausalLM.state_dict() (merge_lora.py saves these)
  unused   a key of the same state_dict the C implementation does not model
           (SAM's point/box/mask prompt embeddings, ImageBind's logit-scale buffer)
  adapter  a key of PEFT's saved adapter for LoRA on all seven LLaMA projections
           (r = 2) and the trainable modules of the C test as modules_to_save

The module tree mirrors, attribute by attribute, the public code the names
come from (read with the search tools, not copied):
  jwh97nn/AnyRef model/anyref.py    AnyRefForCausalLM.model = AnyRefModel:
        LLaVA's LlamaModel + vision_tower + mm_projector, visual_model (SAM),
        text_hidden_fcs, audio_encoder (ImageBind with only the audio modality),
        audio_projector; lm_head
  huggingface/transformers          LlamaForCausalLM, CLIPVisionModel
  haotian-liu/LLaVA                 CLIPVisionTower.vision_tower, mlp2x_gelu projector
  facebookresearch/segment-anything Sam, ImageEncoderViT, PromptEncoder, MaskDecoder
  facebookresearch/ImageBind        AudioPreprocessor, SimpleTransformer, heads
  huggingface/peft 0.4              get_peft_model_state_dict's renaming
Parameter shapes come from torch itself (nn.Linear, ConvTranspose2d,
MultiheadAttention(add_bias_kv) ...). Run with /usr/bin/python3 (torch)."""
import sys
import torch
import torch.nn as nn

V, D, LAYERS, HEADS, KV, MLP = 40, 16, 2, 2, 1, 24
SAM_C, SAM_MLP, SAM_HEADS, NMASK, IOU_H = 16, 24, 2, 4, 16
ENC_IMG, ENC_PATCH, ENC_DIM, ENC_DEPTH, ENC_MLP, ENC_OUT, WINDOW = 64, 16, 16, 2, 64, 16, 3
CLIP_S, CLIP_P, CLIP_W, CLIP_L, CLIP_MLP = 32, 8, 24, 2, 48
AU_D, AU_DEPTH, AU_K, AU_S, AU_MELS, AU_LEN, AU_OUT = 32, 2, 8, 6, 32, 40, 48
R = 2


class Holder(nn.Module):
    def __init__(self, **kw):
        super().__init__()
        for k, v in kw.items():
            setattr(self, k, v)


def P(*shape):
    return nn.Parameter(torch.zeros(*shape))


# ---- LLaMA (transformers LlamaForCausalLM) ----
def llama_layer():
    hd = D // HEADS
    return Holder(
        self_attn=Holder(q_proj=nn.Linear(D, HEADS * hd, bias=False), k_proj=nn.Linear(D, KV * hd, bias=False),
                         v_proj=nn.Linear(D, KV * hd, bias=False), o_proj=nn.Linear(HEADS * hd, D, bias=False)),
        mlp=Holder(gate_proj=nn.Linear(D, MLP, bias=False), up_proj=nn.Linear(D, MLP, bias=False),
                   down_proj=nn.Linear(MLP, D, bias=False)),
        input_layernorm=Holder(weight=P(D)), post_attention_layernorm=Holder(weight=P(D)))


# ---- SAM ----
class LayerNorm2d(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.weight, self.bias = P(c), P(c)


def sam_attention(dim, downsample):
    i = dim // downsample
    return Holder(q_proj=nn.Linear(dim, i), k_proj=nn.Linear(dim, i), v_proj=nn.Linear(dim, i), out_proj=nn.Linear(i, dim))


def sam_mlp(i, h, o, n):
    dims = [i] + [h] * (n - 1)
    outs = [h] * (n - 1) + [o]
    return Holder(layers=nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, outs)))


def mask_decoder():
    C = SAM_C
    layers = nn.ModuleList(Holder(
        self_attn=sam_attention(C, 1), norm1=nn.LayerNorm(C), cross_attn_token_to_image=sam_attention(C, 2),
        norm2=nn.LayerNorm(C), mlp=Holder(lin1=nn.Linear(C, SAM_MLP), lin2=nn.Linear(SAM_MLP, C)), norm3=nn.LayerNorm(C),
        norm4=nn.LayerNorm(C), cross_attn_image_to_token=sam_attention(C, 2)) for _ in range(2))
    transformer = Holder(layers=layers, final_attn_token_to_image=sam_attention(C, 2), norm_final_attn=nn.LayerNorm(C))
    return Holder(
        transformer=transformer, iou_token=nn.Embedding(1, C), mask_tokens=nn.Embedding(NMASK, C),
        output_upscaling=nn.Sequential(nn.ConvTranspose2d(C, C // 4, 2, 2), LayerNorm2d(C // 4), nn.GELU(),
                                       nn.ConvTranspose2d(C // 4, C // 8, 2, 2), nn.GELU()),
        output_hypernetworks_mlps=nn.ModuleList(sam_mlp(C, C, C // 8, 3) for _ in range(NMASK)),
        iou_prediction_head=sam_mlp(C, IOU_H, NMASK, 3))


class PromptEncoder(nn.Module):
    def __init__(self, C, mask_in_chans=16):
        super().__init__()
        self.pe_layer = Holder()
        self.pe_layer.register_buffer("positional_encoding_gaussian_matrix", torch.zeros(2, C // 2))
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, C) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, C)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, 2, 2), LayerNorm2d(mask_in_chans // 4), nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, 2, 2), LayerNorm2d(mask_in_chans), nn.GELU(),
            nn.Conv2d(mask_in_chans, C, 1))
        self.no_mask_embed = nn.Embedding(1, C)


def image_encoder():
    G = ENC_IMG // ENC_PATCH
    hd = ENC_DIM // 2
    blocks = nn.ModuleList()
    for i in range(ENC_DEPTH):
        size = G if i == 1 else WINDOW          # block 1 global, as the C test
        blocks.append(Holder(
            norm1=nn.LayerNorm(ENC_DIM),
            attn=Holder(qkv=nn.Linear(ENC_DIM, 3 * ENC_DIM), proj=nn.Linear(ENC_DIM, ENC_DIM),
                        rel_pos_h=P(2 * size - 1, hd), rel_pos_w=P(2 * size - 1, hd)),
            norm2=nn.LayerNorm(ENC_DIM), mlp=Holder(lin1=nn.Linear(ENC_DIM, ENC_MLP), lin2=nn.Linear(ENC_MLP, ENC_DIM))))
    return Holder(
        patch_embed=Holder(proj=nn.Conv2d(3, ENC_DIM, ENC_PATCH, ENC_PATCH)), pos_embed=P(1, G, G, ENC_DIM), blocks=blocks,
        neck=nn.Sequential(nn.Conv2d(ENC_DIM, ENC_OUT, 1, bias=False), LayerNorm2d(ENC_OUT),
                           nn.Conv2d(ENC_OUT, ENC_OUT, 3, padding=1, bias=False), LayerNorm2d(ENC_OUT)))


# ---- CLIP (transformers CLIPVisionModel) inside LLaVA's CLIPVisionTower ----
def clip_vision_model():
    T = (CLIP_S // CLIP_P) ** 2 + 1
    emb = Holder(class_embedding=P(CLIP_W), patch_embedding=nn.Conv2d(3, CLIP_W, CLIP_P, CLIP_P, bias=False),
                 position_embedding=nn.Embedding(T, CLIP_W))
    layers = nn.ModuleList(Holder(
        self_attn=Holder(k_proj=nn.Linear(CLIP_W, CLIP_W), v_proj=nn.Linear(CLIP_W, CLIP_W), q_proj=nn.Linear(CLIP_W, CLIP_W),
                         out_proj=nn.Linear(CLIP_W, CLIP_W)),
        layer_norm1=nn.LayerNorm(CLIP_W), mlp=Holder(fc1=nn.Linear(CLIP_W, CLIP_MLP), fc2=nn.Linear(CLIP_MLP, CLIP_W)),
        layer_norm2=nn.LayerNorm(CLIP_W)) for _ in range(CLIP_L))
    return Holder(vision_model=Holder(embeddings=emb, pre_layrnorm=nn.LayerNorm(CLIP_W), encoder=Holder(layers=layers),
                                      post_layernorm=nn.LayerNorm(CLIP_W)))


# ---- ImageBind, audio modality only (AnyRef deletes the others) ----
def audio_encoder():
    gh, gw = (AU_MELS - AU_K) // AU_S + 1, (AU_LEN - AU_K) // AU_S + 1
    T = gh * gw + 1
    stem = Holder(proj=nn.Conv2d(1, AU_D, AU_K, AU_S, bias=False), norm_layer=nn.LayerNorm(AU_D))
    pre = Holder(rgbt_stem=stem, cls_token=P(1, 1, AU_D), pos_embedding_helper=Holder(pos_embed=P(1, T, AU_D)))
    blocks = nn.ModuleList(Holder(
        attn=nn.MultiheadAttention(AU_D, 4, bias=True, add_bias_kv=True), norm_1=nn.LayerNorm(AU_D),
        mlp=Holder(fc1=nn.Linear(AU_D, 4 * AU_D), fc2=nn.Linear(4 * AU_D, AU_D)), norm_2=nn.LayerNorm(AU_D))
        for _ in range(AU_DEPTH))
    post = nn.Sequential(nn.Identity(), Holder())
    post[1].register_buffer("log_logit_scale", torch.zeros([]))
    return Holder(modality_preprocessors=nn.ModuleDict({"audio": pre}),
                  modality_trunks=nn.ModuleDict({"audio": Holder(blocks=blocks)}),
                  modality_heads=nn.ModuleDict({"audio": nn.Sequential(nn.LayerNorm(AU_D), nn.Identity(),
                                                                       nn.Linear(AU_D, AU_OUT, bias=False))}),
                  modality_postprocessors=nn.ModuleDict({"audio": post}))


def anyref():
    model = Holder(
        embed_tokens=nn.Embedding(V, D), layers=nn.ModuleList(llama_layer() for _ in range(LAYERS)), norm=Holder(weight=P(D)),
        vision_tower=Holder(vision_tower=clip_vision_model()),
        mm_projector=nn.Sequential(nn.Linear(CLIP_W, D), nn.GELU(), nn.Linear(D, D)),
        visual_model=Holder(image_encoder=image_encoder(), prompt_encoder=PromptEncoder(SAM_C), mask_decoder=mask_decoder()),
        text_hidden_fcs=nn.ModuleList([nn.Sequential(nn.Linear(D, D), nn.ReLU(), nn.Linear(D, SAM_C), nn.Dropout(0.0))]),
        audio_encoder=audio_encoder(), audio_projector=nn.Linear(AU_OUT, D))
    return Holder(model=model, lm_head=nn.Linear(D, V, bias=False))


UNUSED = ("model.visual_model.prompt_encoder.point_embeddings.", "model.visual_model.prompt_encoder.not_a_point_embed.",
          "model.visual_model.prompt_encoder.mask_downscaling.", "model.audio_encoder.modality_postprocessors.")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MODULES_TO_SAVE = ("mask_decoder.mask_tokens", "output_upscaling", "output_hypernetworks_mlps", "embed_tokens", "lm_head",
                   "text_hidden_fcs", "mm_projector", "audio_projector")


def adapter_keys(m):
    """PEFT 0.4: LoRA'd Linear gets lora_A/lora_B ModuleDicts keyed by adapter
    'default'; a modules_to_save module is wrapped (original_module,
    modules_to_save.default). get_peft_model_state_dict keeps the lora_ keys
    and the modules_to_save.default keys, drops 'modules_to_save.' and then
    '.default'; PeftModel prefixes base_model.model."""
    out = []
    for name, mod in m.named_modules():
        if name.startswith("model.layers.") and name.split(".")[-1] in LORA_TARGETS:
            w = mod.weight
            for ab, shape in (("lora_A", (R, w.shape[1])), ("lora_B", (w.shape[0], R))):
                key = "base_model.model.%s.%s.default.weight" % (name, ab)
                out.append((key.replace(".default", ""), shape))
    wrapped = [n for n, _ in m.named_modules() if any(n.endswith(t) for t in MODULES_TO_SAVE)]
    wrapped = [n for n in wrapped if not any(n != o and n.startswith(o + ".") for o in wrapped)]
    for n in wrapped:
        mod = m.get_submodule(n)
        for pn, p in mod.named_parameters():
            key = "base_model.model.%s.modules_to_save.default.%s" % (n, pn)
            out.append((key.replace("modules_to_save.", "").replace(".default", ""), tuple(p.shape)))
    return out


def main(path):
    m = anyref()
    lines = []
    for k, v in m.state_dict().items():
        kind = "unused" if k.startswith(UNUSED) else "full"
        lines.append("%s %s %s" % (kind, k, ",".join(str(d) for d in v.shape) or "-"))
    for k, shape in adapter_keys(m):
        lines.append("adapter %s %s" % (k, ",".join(str(d) for d in shape)))
    with open(path, "w") as f:
        f.write("# generated by tests/ref/names_ref.py: <kind> <state_dict key> <shape>\n")
        f.write("\n".join(lines) + "\n")
    print("wrote", path, len(lines), "keys")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/names_anyref_keys.txt")
