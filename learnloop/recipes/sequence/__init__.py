"""Recipes with recurrent networks (issue B): one module per recipe or per pair sharing data.

    language.py   char-rnn-language   which of 7 languages a line is in (music21's excerpts), char-level
    qa.py         rnn-qa              FAQ answering: a word-level GRU classifies a question into an answer
    char_lm.py    char-lm             character LSTM language model of the fortunes, and the LM code
                                      ulmfit-classify shares (windows, model, metrics, samples)
    ulmfit.py     ulmfit-classify     ULMFiT (Howard & Ruder, 2018): the LM fine-tuned into a classifier
                                      vs the same classifier from scratch
    numbers.py    next-number,        generated number sequences; RNN vs LSTM vs GRU, the long-lag recall
                  vanishing-through-time   task and the gradient norm through time
    common.py                         the shared `train` section, text classifier and its predictor

All data is offline: the language excerpts ship with music21, the fortunes with Debian's `fortunes`
package, the FAQ with learnloop (learnloop/assets/faq.csv), and the number sequences are generated from
the seed. The recipes' family is this package's name, "sequence".
"""
