"""Incremental detokenization with stop strings.

Text rule: decode a small window `ids[prefix:]` and emit what it adds over `ids[prefix:read]`;
if the window ends in U+FFFD the last token(s) hold part of a UTF-8 character, so wait for more.
Stop rule: text that could still be the start of a stop string is held back; when a stop string
appears the output is cut just before it, and the stop string itself is never emitted.
The concatenated output equals `decode(all ids)` cut at the first stop string.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT = "\ufffd"

Decode = Callable[[Sequence[int]], str]


class Detokenizer:
    def __init__(self, decode: Decode, stop: tuple[str, ...] = ()) -> None:
        self._decode = decode
        self._stop = tuple(s for s in stop if s)
        self._ids: list[int] = []
        self._prefix = 0  # window start: tokens before it are fully emitted
        self._read = 0  # tokens whose text is already in self._text
        self._text = ""
        self._emitted = 0
        self.stopped = False

    @property
    def text(self) -> str:
        """Everything emitted so far."""
        return self._text[: self._emitted]

    def add(self, token_id: int) -> str:
        """Feed one generated token; returns the text that is now safe to emit (maybe "")."""
        assert not self.stopped, "token after a stop string"
        self._ids.append(token_id)
        self._text += self._decode_new(final=False)
        return self._release(final=False)

    def finish(self) -> str:
        """The sequence ended: flush held-back text (an incomplete character decodes as U+FFFD,
        exactly as a one-shot decode would)."""
        if not self.stopped:
            self._text += self._decode_new(final=True)
        return self._release(final=True)

    def _decode_new(self, final: bool) -> str:
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) <= len(before) or (after.endswith(REPLACEMENT) and not final):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return after[len(before) :]

    def _release(self, final: bool) -> str:
        if self.stopped:
            return ""
        end = len(self._text)
        cut = self._find_stop()
        if cut is not None:
            self.stopped = True
            end = cut
        elif not final:
            end -= self._held_back()
        out = self._text[self._emitted : end]
        self._emitted = end
        return out

    def _find_stop(self) -> int | None:
        hits = [i for i in (self._text.find(s, self._emitted) for s in self._stop) if i >= 0]
        return min(hits) if hits else None

    def _held_back(self) -> int:
        """Length of the longest unemitted suffix that is a proper prefix of a stop string."""
        tail = self._text[self._emitted :]
        for size in range(min(len(tail), max((len(s) for s in self._stop), default=1) - 1), 0, -1):
            suffix = tail[-size:]
            if any(s.startswith(suffix) for s in self._stop):
                return size
        return 0
