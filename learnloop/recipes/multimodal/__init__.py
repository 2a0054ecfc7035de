"""Recipes that join images and text (issue E): one module per recipe.

    clip.py       clip     CLIP (Radford et al., 2021): a small CNN image encoder and a scratch-Transformer text
                           encoder trained with symmetric InfoNCE on Fashion-MNIST images and captions built
                           from their labels and attributes (learnloop.data.captions); zero-shot
                           classification from prompts (one template and a prompt ensemble) beside a linear
                           probe on the frozen image features, and image-text retrieval recall@1/5

A later recipe consumes a finished `clip` run through `load_run`: `run.model` is the CLIP module
(`encode_text(ids, pad_mask) -> (embedding, token_states)`) and
`learnloop.data.captions.CaptionTokenizer.from_info(run.info)` its tokenizer. The recipe modules register
themselves when `learnloop.recipes.base.recipes()` walks this package; the family is its name, "multimodal".
"""
