"""The CPU backend: the exported model run by ONNX Runtime, texts tokenized by `tokenizers`.

Neither torch nor transformers is imported here (together they cost seconds per process): a run
on this backend loads the tokenizer from the folder's `tokenizer.json` and creates one ONNX
Runtime session from the cached export (see `onnx_export`, and `onnx_quantize` for int8),
which is the whole model load.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sophia_assets.embedding.embedder import ModelCard
from sophia_assets.embedding.onnx_export import INPUTS, OUTPUT


def load_tokenizer(card: ModelCard):
    """The folder's fast tokenizer, truncating to the model's window and padding to the longest
    text of a batch, as the torch backend's tokenizer call does."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(card.path / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=card.max_tokens)
    pad_id = tokenizer.token_to_id("[PAD]") or 0
    tokenizer.enable_padding(pad_id=pad_id, pad_token="[PAD]")
    return tokenizer


class OnnxEncoder:
    """Vectors for batches of texts from one ONNX Runtime session.

    The session computes each batch on one thread, and `threads` batches run at once (by
    default one per CPU this process may use; ONNX Runtime's own default counts physical
    cores, one where two hyperthreads are all a container has). Here that embedded 256-token
    chunks about 20% faster than one batch at a time on two intra-op threads, whose small
    matrix products do not split well. A lone batch (a live micro-batch of one document, a
    search query) has nothing to run beside it, so it runs on a second session with every
    thread: a one-chunk document in ~36 ms instead of ~46 ms on two cores. That session is
    made on first use, so a process that never embeds a lone batch does not hold it."""

    def __init__(self, card: ModelCard, model: bytes, threads: int | None = None):
        from tokenizers import Tokenizer

        if not (card.path / "tokenizer.json").exists():
            raise FileNotFoundError(f"{card.path} has no tokenizer.json")
        self.workers = threads or _usable_cpus()
        self._pool: ThreadPoolExecutor | None = None
        self._model = model
        self._solo = None  # the all-threads session for a lone batch, made on first use
        self.session = _session(model, threads=1)
        self.tokenizer = load_tokenizer(card)
        # For chunking: the whole text's offsets, no special tokens, no truncation or padding.
        self.offsets_tokenizer = Tokenizer.from_str(self.tokenizer.to_str())
        self.offsets_tokenizer.no_truncation()
        self.offsets_tokenizer.no_padding()

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return self.offsets_tokenizer.encode(text, add_special_tokens=False).offsets

    def encode(self, texts: list[str]) -> Any:
        """A float32 array, one row per text."""
        (vectors,) = self.session.run([OUTPUT], feeds(self.tokenizer, texts))
        return vectors

    def encode_many(self, batches: list[list[str]]) -> Iterator[Any]:
        """`encode` of each batch, in order, `workers` at a time (a session may be run from
        several threads at once, and the tokenizer's settings never change)."""
        if self.workers == 1:
            return map(self.encode, batches)
        if len(batches) == 1:
            if self._solo is None:
                self._solo = _session(self._model, threads=self.workers)
            (vectors,) = self._solo.run([OUTPUT], feeds(self.tokenizer, batches[0]))
            return iter([vectors])
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="sophia-onnx")
        return self._pool.map(self.encode, batches)


def _session(model: bytes, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    # Threads that spin while waiting for work steal the CPU from others on a shared machine.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def feeds(tokenizer, texts: list[str]) -> dict[str, Any]:
    """The graph's inputs for a batch: token ids, attention mask and token types, as int64."""
    import numpy as np

    encodings = tokenizer.encode_batch(texts)
    rows = {
        "input_ids": [e.ids for e in encodings],
        "attention_mask": [e.attention_mask for e in encodings],
        "token_type_ids": [e.type_ids for e in encodings],
    }
    return {name: np.array(rows[name], dtype=np.int64) for name in INPUTS}


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
