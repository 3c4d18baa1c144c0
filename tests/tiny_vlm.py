"""Tiny randomly initialised vision-language models built offline from configs (Qwen2-VL, LLaVA, Idefics3),
saved to a folder and loaded back through the production path (``hf:FOLDER``)."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ("A B C D E Yes No the a of is in this image Answer answer with option letter from given choices "
         "directly How many Is there On which side Left Right lesion focal quadrant . : ? , 0 1 2 3 user "
         "assistant").split()

QWEN_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
                 "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|>"
                 "<|vision_end|>{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
GENERIC_TEMPLATE = ("{% for m in messages %}<|user|>{% if m['content'] is string %}{{ m['content'] }}{% else %}"
                    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}"
                    "{% endif %}"
                    "{% endfor %}{% endif %}<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")


def tokenizer(specials: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for t in ["[PAD]", "[UNK]", *specials, *WORDS]:
        vocab.setdefault(t, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]",
                                   additional_special_tokens=specials, padding_side="left")


def _llama(tok) -> dict:
    return dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, pad_token_id=0, bos_token_id=tok.convert_tokens_to_ids("<|user|>"),
                eos_token_id=tok.convert_tokens_to_ids("<|end|>"))


def build(kind: str, folder: Path, seed: int = 0) -> Path:
    import transformers as T

    torch.manual_seed(seed)
    if kind == "qwen2_vl":
        specials = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                    "<|video_pad|>"]
        tok = tokenizer(specials)
        ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
        cfg = T.Qwen2VLConfig(
            text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, pad_token_id=0,
                             rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                              "mrope_section": [2, 1, 1]},
                             bos_token_id=ids["<|im_start|>"], eos_token_id=ids["<|im_end|>"]),
            vision_config=dict(depth=2, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=14,
                               spatial_merge_size=2, temporal_patch_size=2),
            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
        model = T.Qwen2VLForConditionalGeneration(cfg)
        images = T.Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
        proc = T.Qwen2VLProcessor(image_processor=images, tokenizer=tok, video_processor=T.Qwen2VLVideoProcessor(),
                                  chat_template=QWEN_TEMPLATE)
    elif kind == "llava":
        tok = tokenizer(["<|user|>", "<|end|>", "<|assistant|>", "<image>"])
        cfg = T.LlavaConfig(text_config=T.LlamaConfig(**_llama(tok)),
                            vision_config=T.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                             num_attention_heads=2, image_size=28, patch_size=14,
                                                             projection_dim=32),
                            image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
                            vision_feature_select_strategy="default")
        model = T.LlavaForConditionalGeneration(cfg)
        proc = T.LlavaProcessor(image_processor=T.CLIPImageProcessor(size={"shortest_edge": 28},
                                                                     crop_size={"height": 28, "width": 28}),
                                tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
                                chat_template=GENERIC_TEMPLATE, num_additional_image_tokens=1)
    elif kind == "idefics3":
        tok = tokenizer(["<|user|>", "<|end|>", "<|assistant|>", "<image>", "<fake_token_around_image>",
                         "<global-img>"])
        cfg = T.Idefics3Config(text_config=T.LlamaConfig(**_llama(tok)),
                               vision_config=T.Idefics3VisionConfig(hidden_size=32, intermediate_size=64,
                                                                    num_hidden_layers=2, num_attention_heads=2,
                                                                    image_size=28, patch_size=14),
                               image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=2)
        model = T.Idefics3ForConditionalGeneration(cfg)
        proc = T.Idefics3Processor(image_processor=T.Idefics3ImageProcessor(
            size={"longest_edge": 28}, max_image_size={"longest_edge": 28}, do_image_splitting=False),
            tokenizer=tok, image_seq_len=1, chat_template=GENERIC_TEMPLATE)
    else:
        raise ValueError(kind)
    folder.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


def force_letter(backend, letter: str, bias: float = 30.0) -> None:
    """Make a loaded hf backend always answer ``letter``: a zero-weight output layer with a bias on it."""
    head = backend.model.get_output_embeddings()
    new = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        new.weight.zero_()
        new.bias.zero_()
        new.bias[backend.tok.convert_tokens_to_ids(letter)] = bias
    backend.model.set_output_embeddings(new)
