"""Sampling: temperature, top-k and top-p, with a KV cache, streamed as text.

While the sequence fits in block_size, each step feeds one token and reuses the cached keys
and values of the others. Positions are absolute (a learned table, or rope's rotation of the
cached keys), so when the window must slide the cache cannot simply be shifted: the last
half-window is prefilled again, once every half-window of new tokens. Each token then sees
between block_size/2 and block_size tokens of context, and a step costs the same at token 100
as at token 100,000 (recomputing the whole window at every step, as nanoGPT does and
`use_cache=False` does, costs block_size tokens of compute per step).
"""

from __future__ import annotations

import dataclasses
import sys
import typing
import unicodedata
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from mypt.config import GenerateSettings
from mypt.errors import CheckpointError, ConfigError, InputError, TokenizerError, listed
from mypt.model import GPT, KVCache
from mypt.settings import SettingError, check_field
from mypt.tokenizer_match import check_model_tokenizer
from mypt.tokenizers import Tokenizer


NOT_FINITE = -1  # the id sample_tokens yields where the model's logits are NaN or inf


def _filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        # The nucleus: the most likely tokens, down to the first at which their probability
        # reaches top_p (a token is needed while those ranked before it hold less: Hugging Face's
        # and llama.cpp's cut), and every token exactly as likely as the last of them. Which of
        # tied tokens to drop would be the sort's arbitrary choice (a token id's, not the
        # model's), so a tie at the cut is kept whole, as top_k keeps a tie at the k-th.
        sorted_logits = torch.sort(logits, descending=True).values
        probs = torch.softmax(sorted_logits, dim=-1)
        needed = (probs.cumsum(-1) - probs < top_p).sum(-1, keepdim=True)  # >= 1: nothing before the first
        last = sorted_logits.gather(-1, needed - 1)
        logits = logits.masked_fill(logits < last, float("-inf"))
    return logits


def check_text(value: str, flag: str) -> str:
    """`value` of `flag`, refused when it is not valid UTF-8. Python decodes such bytes of the
    command line to lone surrogates (surrogateescape), which no tokenizer can encode and each
    kind fails on differently; the message shows the bytes as given."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raw = value.encode("utf-8", "surrogateescape")
        bad = value[e.start:e.end].encode("utf-8", "surrogateescape")
        raise TokenizerError(f"{flag} {raw!r}: not valid UTF-8 (byte {bad[:1]!r} at character {e.start}); give "
                             f"{flag} as UTF-8 text (check the terminal's or the script's encoding)") from None
    return value


def read_prompt(prompt: str, prompt_file: Path | None) -> str:
    """The prompt: `prompt` (--prompt), or the text of `prompt_file` (--prompt_file) as it is,
    a last newline kept, as nanoGPT's `FILE:` reads it; a UTF-8 byte-order mark (Notepad's) is
    not part of the text."""
    if prompt_file is None:
        return prompt
    path = Path(prompt_file)
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "does not exist"
        raise InputError(f"--prompt_file {path} {what}: pass a text file holding the prompt")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"--prompt_file {path} cannot be read ({e.strerror}): pass a readable text file") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"--prompt_file {path}: not valid UTF-8 (byte {data[e.start:e.start + 1]!r} at offset "
                         f"{e.start}); save the file as UTF-8") from None


def as_trained(tokenizer, prompt: str, text_nfc: bool | None = None) -> str:
    """The prompt as the training text had it, by prepare-dataset's normalization (on by default):

    - line ends: it and train --input_file's reading make every \\r\\n and lone \\r a \\n, so a
      \\r is a token the model never saw (a Windows editor's --prompt_file ends its lines with
      them). Kept where the vocabulary shows the corpus had them: a char vocabulary holding \\r
      (prepared with --no_normalize; a gpt2 or hf vocabulary holds \\r whatever the corpus).
    - Unicode NFC: a decomposed 'cafe\\u0301' (macOS file names, text copied from some PDFs) is
      the 'café' the corpus held, one character a char vocabulary knows (the combining accent
      alone it may not); GPT-2 encodes 'the café' as [1169, 40304] and the decomposed form as
      [1169, 26725, 136, 223], ids the model never saw in that order. Applied where the
      checkpoint records its text was NFC (`text_nfc`, its config.json's: prepare-dataset's
      normalize). Kept as given where it records the text was not (--no_normalize, train
      --input_file, which reads text as it is): NFC rewrites more than accents (U+F91D as
      U+6B04, the ohm sign as omega, conjoining jamo as syllables), other ids than the model
      learned. Unrecorded (None: a checkpoint saved without it), a char vocabulary decides: kept
      where it lacks a character of the NFC form and holds those of the prompt; a gpt2 or hf
      vocabulary encodes any text and cannot show it: kept as given, never rewritten unasked."""
    if "\r" in prompt and not (tokenizer.kind == "char" and _encodes(tokenizer, "\r")):
        prompt = prompt.replace("\r\n", "\n").replace("\r", "\n")
    if prompt.isascii() or text_nfc is False:  # (ASCII is NFC)
        return prompt
    composed = unicodedata.normalize("NFC", prompt)
    if composed == prompt:  # (and a prompt check_text refuses, not valid UTF-8, reaches it unencoded)
        return prompt
    if tokenizer.kind == "char":
        return prompt if not _encodes(tokenizer, composed) and _encodes(tokenizer, prompt) else composed
    return composed if text_nfc else prompt


def _encode_prompt(tokenizer, prompt: str, flag: str) -> list[int]:
    """The prompt's ids, encoded once: what the vocabulary lacks is refused where the tokenizer has
    no unknown token (char), and warned of where it has one (an hf vocabulary's [UNK])."""
    check_text(prompt, flag)
    try:
        ids, unknown = tokenizer.encode_lossy(prompt)
    except TokenizerError:  # (a char vocabulary with no stand-in character)
        ids, unknown = None, {c for c in set(prompt) if not _encodes(tokenizer, c)}
    if ids is None or (unknown and getattr(tokenizer, "unknown_token", None) is None):
        raise TokenizerError(f"{flag}: the characters {sorted(unknown)} are not in the model's {tokenizer.kind} "
                             f"vocabulary of {tokenizer.vocab_size} characters; leave them out of {flag} (the model "
                             "knows only the characters of the corpus it was trained on)")
    if unknown:  # one id for all
        shown = listed([repr(p) for p in unknown], 10)
        print(f"warning: {flag}: {shown} not in the model's vocabulary: each became its unknown token "
              f"{tokenizer.unknown_token}, and the model sees them all as one", file=sys.stderr)
    return ids.tolist()


def _encodes(tokenizer, char: str) -> bool:
    try:
        tokenizer.encode(char)
    except TokenizerError:
        return False
    return True


@torch.no_grad()
def sample_tokens(model: GPT, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                  top_k: int | None = None, top_p: float | None = None, generator: torch.Generator | None = None,
                  use_cache: bool = True, unused: Sequence[int] = ()) -> Iterator[torch.Tensor]:
    """Yield (B,) next-token tensors, one step at a time. idx: (B, T) prompt ids. A row whose
    logits are not finite yields NOT_FINITE (-1) for that step. `unused`: ids never sampled
    (Tokenizer.unused_ids: no token has them, they would print nothing)."""
    model.eval()
    unused = torch.tensor(list(unused), dtype=torch.long, device=idx.device) if len(unused) else None
    block = model.config.block_size
    window = idx[:, -block:]  # only the last block_size tokens can matter: memory stays flat
    cache = None
    for _ in range(max_new_tokens):
        if not use_cache:
            logits, _ = model(window)
        elif cache is None:  # prefill the prompt
            # Positions the prompt and the new tokens fill (the last one is never fed back), at most
            # a block: past it the cache is reused from position 0 (below).
            cache = KVCache(model.config, window.size(0), window.device, next(model.parameters()).dtype,
                            length=window.size(1) + max_new_tokens - 1)
            logits, _ = model(window, cache=cache)
        elif cache.pos >= block:  # full: keep the last half-window, positions from 0 again
            cache.pos = 0
            logits, _ = model(window[:, -max(1, block // 2):], cache=cache)  # (block 1: -0 was all of it)
        else:
            logits, _ = model(window[:, -1:], cache=cache)
        logits = logits[:, -1].float()  # (B, vocab_size): the model leaves the padded ids out
        # Rows whose logits are NaN or inf (weights that load finite but overflow) yield
        # NOT_FINITE, checked by the caller when it reads the id anyway: a check here would wait
        # for the GPU at every token. Their logits are zeroed first: NaN in torch.multinomial is
        # a traceback on the CPU and a device-side assert on CUDA.
        broken = ~torch.isfinite(logits).all(-1, keepdim=True)
        logits = logits.masked_fill(broken, 0.0)
        if unused is not None:  # (after the check: -inf here is no overflow)
            logits = logits.index_fill(-1, unused, float("-inf"))
        if temperature == 0:
            nxt = logits.argmax(-1)
        else:
            probs = torch.softmax(_filter_logits(logits / temperature, top_k, top_p), dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        # The last block - 1 tokens and the new one (as an index, not -(block - 1): -0 is all of it)
        window = torch.cat([window[:, max(0, window.size(1) - block + 1):], nxt[:, None]], dim=1)
        yield nxt.masked_fill(broken[:, 0], NOT_FINITE)


def _not_finite(step: int) -> CheckpointError:
    return CheckpointError(f"the model's output is not finite (NaN or inf) at new token {step + 1}: its weights "
                           "overflow (a run that diverged?); sample from an earlier checkpoint of the model, "
                           "or on another --device")


class TextStream:
    """Token ids in, text pieces out: the pieces join to exactly the text the ids decode to
    after `context` (the prompt's ids), with O(1) work per token.

    Decoding each token alone and joining the pieces is wrong for decoders whose output
    depends on where a token sits: a sentencepiece-style (Metaspace) or WordPiece decoder drops
    the space before the first token of a sequence ('▁quick' alone is 'quick', after '▁the' it
    is ' quick'), so the joined pieces lost every space between words. Decoding the whole
    sample at every token is right but costs O(length) per token. So, as text-generation-
    inference and vLLM do ("incremental detokenization"): decode a short window of ids that
    begins a little before the new ones, twice, without and with the new ids; what the second
    adds past the first is the new text, since both start at the same token. The window then
    starts at the ids just shown, so it stays a few tokens long.

    - A character split across tokens (byte-level BPE, byte fallback) waits until it decodes
      cleanly: a decoding that ends in U+FFFD shows only the text before those U+FFFD, and at
      most PENDING ids wait (a U+FFFD the model really wrote, or bytes that never form one).
    - Text that could be the start of a stop string waits until it cannot; stop strings are
      matched on the decoded text, so they are found across tokens and spaces.

    One decoder still rewrites text it gave: tokenizers' ByteFallback (Llama 2) makes every
    byte of a run of <0x..> tokens U+FFFD once the run is not valid UTF-8, a valid one too;
    the stream keeps the characters the valid bytes gave before the run went wrong.
    """

    # Ids a split character may keep waiting: a character is 4 bytes at most, but an untrained
    # model's random bytes leave one split after another (each about 1 time in 2).
    PENDING = 16
    # The prompt's last ids, decoded before the first new one so that it gets the space (or
    # none) it has after them.
    CONTEXT = 4

    def __init__(self, tokenizer, stop: Sequence[str] = (), context: Sequence[int] = ()):
        self.tokenizer, self.stop = tokenizer, [s for s in stop if s]
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        # The window: ids[:read] are shown (they begin where the last decoding was clean), the
        # rest wait; `extra` characters of the latter's text are shown already (the text before
        # a split character).
        self.ids = [int(i) for i in list(context)[-self.CONTEXT:]]
        self.read, self.extra = len(self.ids), 0
        self.text = ""  # decoded, not yet shown (it may begin a stop string)
        self.stopped = False

    def _decoded(self, force: bool = False) -> str:
        """The new text of the waiting ids that can be shown now."""
        done = self.tokenizer.decode(self.ids[:self.read])
        now = self.tokenizer.decode(self.ids)
        shown = len(done) + self.extra
        if now.endswith("\ufffd") and not force and len(self.ids) - self.read < self.PENDING:
            clean = len(now.rstrip("\ufffd"))  # a complete character never changes with the bytes after it
            piece = now[shown:clean]
            self.extra += len(piece)
            return piece
        piece = now[shown:]
        self.ids, self.read, self.extra = self.ids[self.read:], len(self.ids) - self.read, 0
        return piece

    def push(self, token: int) -> str:
        """The text that can be shown after `token` ("" while held back)."""
        if self.stopped:
            return ""
        self.ids.append(int(token))
        return self._show(self._decoded(), self.hold)

    def flush(self) -> str:
        """The text still held back, at the end of the sample."""
        if self.stopped:
            return ""
        return self._show(self._decoded(force=True) if len(self.ids) > self.read else "", 0)

    def _show(self, piece: str, hold: int) -> str:
        """What of the held text and `piece` can be shown, keeping `hold` characters back."""
        self.text += piece
        hits = [at for at in (self.text.find(s) for s in self.stop) if at != -1]
        if hits:  # the earliest stop string in the text wins, whatever their order
            self.stopped = True
            shown, self.text = self.text[:min(hits)], ""
            return shown
        cut = max(0, len(self.text) - hold)
        shown, self.text = self.text[:cut], self.text[cut:]
        return shown


def _check_arguments(model: GPT, tokenizer, prompt, **settings) -> None:
    """generate's arguments, each checked as its flag of `mypt generate` is (GenerateSettings'
    field), None where the API takes it for "off": a negative temperature would sample the least
    likely tokens and a max_new_tokens of -1 give the prompt back, unsaid; a NaN temperature or
    top_p 0 would be torch's traceback. Then what the model cannot sample with: a tokenizer of
    another vocabulary (ids it cannot decode, or an index error in the embedding)."""
    fields = {f.name: f for f in dataclasses.fields(GenerateSettings)}
    hints = typing.get_type_hints(GenerateSettings)
    for name, value in settings.items():
        if value is not None:
            try:
                check_field(fields[name], value, hints[name], "generate's")
            except SettingError as e:
                raise ConfigError(str(e)) from None
    if not isinstance(prompt, str):
        raise ConfigError(f"generate's prompt is a {type(prompt).__name__}: pass the text to continue (a str; \"\" "
                          "for the start of a document)")
    if not isinstance(tokenizer, Tokenizer):
        raise ConfigError(f"generate's tokenizer is a {type(tokenizer).__name__}: pass the model's, the Tokenizer "
                          "that load_model(path) returns with it")
    check_model_tokenizer(model, tokenizer, "generate's tokenizer",
                          "pass the Tokenizer that load_model(path) returns with it")


def generate(model: GPT, tokenizer, prompt: str, max_new_tokens: int = 200, temperature: float = 0.8,
             top_k: int | None = 200, top_p: float | None = None, seed: int | None = 1337, num_samples: int = 1,
             on_text: Callable[[int, str], None] | None = None, use_cache: bool = True,
             stop: Sequence[str] = (), prompt_flag: str = "--prompt", text_nfc: bool | None = None) -> list[str]:
    """Sample `num_samples` continuations of `prompt`; `on_text(sample, piece)` receives text
    as it is produced (streaming). A sample ends at the end-of-text token, at the first of the
    `stop` strings (not included; one str is one stop string) or after max_new_tokens. Returns the full texts, prompt
    included. `on_text` gets an empty piece when each sample has its first token, so a caller
    that prints a header per sample prints it even when the sample stops at once (a stop
    string or the end-of-text token first), and not when the model fails before that.
    `prompt_flag`: how errors about the prompt name where it came from (`--prompt_file PATH`).
    The prompt is read as the training text was normalized (\\r\\n and \\r as \\n, Unicode NFC where
    `text_nfc`, the checkpoint config.json's record of it, says so: see as_trained); the texts
    returned begin with the prompt as given."""
    stop = [stop] if isinstance(stop, str) else list(stop)  # (a str's characters would each be a stop string)
    _check_arguments(model, tokenizer, prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                     top_p=top_p, seed=seed, num_samples=num_samples)
    device = next(model.parameters()).device
    for s in stop:
        check_text(s, "--stop")
    ids = _encode_prompt(tokenizer, as_trained(tokenizer, prompt, text_nfc), prompt_flag) if prompt else []
    # What is shown: the prompt as written, then the text that decoding its ids and the new ones
    # together gives past the decoded prompt (TextStream's context). A byte-level tokenizer
    # decodes the prompt to itself; a sentencepiece-style (Metaspace) or normalizing one may not
    # (a leading space dropped, the text lower-cased, a piece it lacks as <unk>): showing that
    # would rewrite what the user typed, while the continuation's own first character (the
    # space before a new word, or none inside one) is the model's and is kept. With no prompt
    # the model starts from a document boundary (the end-of-text token or a newline), and the
    # new text is decoded as a document's start, as the corpus' documents were: no leading
    # space from a Metaspace decoder, no '<|endoftext|>' text before it.
    context = list(ids)
    if not ids:
        ids = tokenizer.encode("\n") if tokenizer.eot_id is None else [tokenizer.eot_id]
    if not ids:  # an hf tokenizer with no end-of-text that encodes a newline as nothing
        raise TokenizerError(f"{prompt_flag} {prompt!r}: the model's {tokenizer.kind} tokenizer encodes it as no "
                             "tokens and has no start of a document to begin from (no end-of-text token, no newline); "
                             f"give a prompt of words it knows ({prompt_flag})")
    generator = torch.Generator(device=device)
    if seed is not None:
        generator.manual_seed(seed)
    texts = []
    for i in range(num_samples):
        idx = torch.tensor([ids], dtype=torch.long, device=device)
        stream, pieces = TextStream(tokenizer, stop, context), []
        tokens = sample_tokens(model, idx, max_new_tokens, temperature, top_k, top_p, generator, use_cache,
                               tokenizer.unused_ids())
        for step, nxt in enumerate(tokens):
            token = int(nxt[0])
            if token == NOT_FINITE:
                raise _not_finite(step)
            if on_text is not None and not pieces:  # the sample has its first token: announce it
                on_text(i, "")
            if tokenizer.eot_id is not None and token == tokenizer.eot_id:
                break
            pieces.append(stream.push(token))
            if on_text is not None and pieces[-1]:
                on_text(i, pieces[-1])
            if stream.stopped:
                break
        pieces.append(stream.flush())
        if on_text is not None and pieces[-1]:
            on_text(i, pieces[-1])
        texts.append(prompt + "".join(pieces))
    return texts
