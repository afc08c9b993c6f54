"""Chinese (and mixed Chinese/English) text: segmentation and hot words with jieba.

The company's own terms — strategy-card keywords, goal metrics and `settings.snapshot.user_terms` — are
added to a private tokenizer as a user dictionary, because jieba splits domain words otherwise
("续费率" → 续 / 费率). One tokenizer per set of terms per process: building jieba's prefix dictionary
costs about a second, so it is built once and reused by every snapshot and index computation."""
from __future__ import annotations

import re
import threading
from collections.abc import Iterable

import jieba
import jieba.analyse

jieba.setLogLevel(30)  # its 'Building prefix dict' lines are noise in a worker's log

_LOCK = threading.Lock()
_TOKENIZERS: dict[frozenset[str], jieba.Tokenizer] = {}
_EXTRACTOR: jieba.analyse.TFIDF | None = None
_ASCII_WORD = re.compile(r"^[a-z][a-z0-9+#.\-]*$")
# English filler that TF-IDF would otherwise rank (jieba's IDF table is Chinese only).
EN_STOP = frozenset("""a an and are as at be but by for from has have i in is it its of on or our so that the
their them they this to too was we were what when which will with you your not no can could would should very
just more most than then there these those also any all been being into about after before over under
need needs want wants please thanks thank done next ok yes get got make made use used""".split())
ZH_STOP = frozenset("我们 你们 他们 这个 那个 一个 没有 可以 希望 现在 已经 还是 因为 所以 如果 但是 非常 比较 需要 觉得 问题 客户".split())


def tokenizer(terms: Iterable[str]) -> jieba.Tokenizer:
    key = frozenset(t.strip() for t in terms if t and t.strip())
    with _LOCK:
        tok = _TOKENIZERS.get(key)
        if tok is None:
            tok = jieba.Tokenizer()
            tok.initialize()
            for term in sorted(key):
                tok.add_word(term, freq=20000)  # high enough that the term is kept whole
            _TOKENIZERS[key] = tok
        return tok


def words(text: str, terms: Iterable[str] = ()) -> list[str]:
    """The words of `text`, English lower-cased (so "LTV" and "ltv" are one word), blanks dropped."""
    tok = tokenizer(terms)
    return [w.lower() if w.isascii() else w for w in (t.strip() for t in tok.lcut(text or "")) if w]


def hot_words(texts: Iterable[str], terms: Iterable[str] = (), top: int = 10) -> list[tuple[str, float]]:
    """The month's hot words by TF-IDF over all texts, with weights (rounded): Chinese words of two or
    more characters, English words of two or more letters; stop words and numbers dropped."""
    terms = list(terms)
    text = "\n".join(t for t in texts if t)
    if not text.strip():
        return []
    tok = tokenizer(terms)
    with _LOCK:
        global _EXTRACTOR
        if _EXTRACTOR is None:
            _EXTRACTOR = jieba.analyse.TFIDF()  # loads jieba's IDF table once per process
        _EXTRACTOR.tokenizer = tok
        # English words reach jieba with their case; lower-case first so "API" and "api" count together.
        ranked = _EXTRACTOR.extract_tags(_lower_ascii(text), topK=top * 4, withWeight=True)
    out = []
    for word, weight in ranked:
        w = word.strip()
        if w.isascii():
            if not _ASCII_WORD.match(w) or len(w) < 2 or w in EN_STOP:
                continue
        elif len(w) < 2 or w in ZH_STOP:
            continue
        out.append((w, round(float(weight), 4)))
        if len(out) >= top:
            break
    return out


def _lower_ascii(text: str) -> str:
    return re.sub(r"[A-Za-z]+", lambda m: m.group(0).lower(), text)


def mentions(text: str, keywords: Iterable[str], terms: Iterable[str] = ()) -> list[str]:
    """Which of `keywords` the text mentions: a keyword is found when it is one of the text's words, or
    (for a keyword jieba would split further, e.g. a phrase) when the text contains it."""
    kws = [k.strip() for k in keywords if k and k.strip()]
    if not kws or not text:
        return []
    tokens = set(words(text, [*terms, *kws]))
    lowered = text.lower()
    return [k for k in kws if k.lower() in tokens or k.lower() in lowered]
