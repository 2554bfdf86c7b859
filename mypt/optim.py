"""The optimizer a run trains with (TrainConfig.optimizer): AdamW alone, or Muon for the
transformer blocks' 2-D weights with AdamW for everything else.

Muon orthogonalizes each weight matrix's momentum (Newton-Schulz), which only means something
for a matrix that maps a hidden vector to another: the attention and MLP weights. Embeddings
(a lookup, not a map), the output head (tied with wte or its own), norms and biases stay on AdamW. Both live in
one `MuonAdamW`, so the fit loop, GradScaler, checkpoints and DDP keep seeing one optimizer.
"""

from __future__ import annotations

import functools
import math
from collections import ChainMap
import torch

from mypt.config import TrainConfig
from mypt.errors import ConfigError
from mypt.precision import cpu_runs_bf16

BLOCKS = "transformer.h."  # the parameters of the transformer blocks (mypt.model.GPT)


def muon_parameter_names(model: torch.nn.Module) -> list[str]:
    """The parameters Muon trains: the blocks' 2-D weights (attention and MLP Linear weights)."""
    return [name for name, p in model.named_parameters()
            if p.requires_grad and name.startswith(BLOCKS) and p.dim() == 2]


def _decays(p: torch.Tensor) -> bool:
    """Whether AdamW decays `p`: matrices and embeddings, not biases and norms."""
    return p.dim() >= 2


def _adamw(params: list[torch.Tensor], cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """Weight decay on matrices and embeddings only (not on biases and norms)."""
    groups = [{"params": [p for p in params if _decays(p)], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if not _decays(p)], "weight_decay": 0.0}]
    # Fused: one kernel for all parameters; torch >= 2.4 has it on the CPU too.
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2),
                             fused=device.type in ("cuda", "cpu"))


def configure_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW (optimizer adamw), or MuonAdamW (optimizer muon)."""
    if cfg.optimizer != "muon":
        return _adamw([p for p in model.parameters() if p.requires_grad], cfg, device)
    if not hasattr(torch.optim, "Muon"):
        raise ConfigError(f"--optimizer muon needs torch.optim.Muon (PyTorch 2.9 or later), this is torch "
                          f"{torch.__version__}: upgrade torch, or train with --optimizer adamw")
    muon_names = set(muon_parameter_names(model))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    # adjust_lr_fn "original" (Keller Jordan's): the update scaled by sqrt(max(1, rows/cols)),
    # the scale muon_learning_rate's default 0.02 comes from. "match_rms_adamw" (Moonshot's,
    # 0.2 * sqrt(max(rows, cols))) is made to reuse AdamW's learning rate (~1e-3): 0.02 under
    # it would be 5.5-11x the step on a 768-wide model (the MLP's c_fc, 3072 x 768: 0.2 *
    # sqrt(3072) = 11 against 2; its c_proj, 768 x 3072: 11 against 1).
    muon = torch.optim.Muon([p for n, p in named if n in muon_names], lr=cfg.muon_learning_rate,
                            momentum=cfg.muon_momentum, weight_decay=cfg.muon_decay, adjust_lr_fn="original")
    for group in muon.param_groups:
        group["muon"] = True  # (saved with the groups: set_lr and a resume tell the kinds apart)
    return MuonAdamW(_adamw([p for n, p in named if n not in muon_names], cfg, device), muon,
                     graphed=cfg.cuda_graphs_on(device.type))


def muon_lr(lr: float, cfg: TrainConfig) -> float:
    """Muon's rate when AdamW's is `lr`: the same fraction of the schedule's peak."""
    return lr * cfg.muon_learning_rate / cfg.learning_rate


def set_lr(optimizer: torch.optim.Optimizer, lr: float, cfg: TrainConfig) -> None:
    """The schedule's learning rate for this step: `lr` for AdamW's groups, and for Muon's the
    same fraction of muon_learning_rate (muon_lr). A user's optimizer whose groups have rates of
    their own (each recorded as its initial_lr, see fit) keeps each group's ratio to the first's:
    one rate for every group trained a 1e-4 group at 1e-2."""
    first = optimizer.param_groups[0].get("initial_lr")
    for group in optimizer.param_groups:
        if group.get("muon"):
            group["lr"] = muon_lr(lr, cfg)
        elif first and group.get("initial_lr", first) != first:
            group["lr"] = lr * group["initial_lr"] / first
        else:
            group["lr"] = lr


def apply_hyperparameters(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> None:
    """Every group's weight decay, betas and momentum as configure_optimizer sets them from
    `cfg`. Called after a resume's load_state_dict, which puts the checkpoint's values back: a
    run resumed with a new --weight_decay would otherwise train with the old one while its
    config.json records the new. (The learning rate is set_lr's, at every step.)"""
    for group in optimizer.param_groups:
        if group.get("muon"):
            group.update(weight_decay=cfg.muon_decay, momentum=cfg.muon_momentum)
        else:
            decays = any(_decays(p) for p in group["params"])
            group.update(betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay if decays else 0.0)


def check_resumable(saved_training: dict, cfg: TrainConfig, path) -> None:
    """Refuse to resume a checkpoint's optimizer state under the other optimizer: AdamW's moments
    are no Muon momentum (nor the reverse), and the parameter groups differ."""
    saved = saved_training.get("optimizer", "adamw")  # (checkpoints before Muon: AdamW)
    if saved != cfg.optimizer:
        raise ConfigError(f"--optimizer {cfg.optimizer}: {path} was trained with {saved}, whose optimizer state "
                          f"cannot continue under {cfg.optimizer}; resume with --optimizer {saved}, or start a "
                          f"new run from its weights with --init_from_model {path} --optimizer {cfg.optimizer}")


class _States(ChainMap):
    """The children's states as one mapping. ChainMap's own lookup would ask AdamW's state, a
    defaultdict, first: it would make (and hand back) an empty state for each Muon parameter."""

    def __getitem__(self, key):
        for states in self.maps:
            if key in states:
                return states[key]
        raise KeyError(key)


class MuonAdamW(torch.optim.Optimizer):
    """AdamW and Muon as one optimizer: its param_groups are AdamW's then Muon's (the same
    dicts: a learning rate set here is set there), step steps both, and state_dict is that of
    one optimizer over those groups (what checkpoint.save flattens)."""

    def __init__(self, adamw: torch.optim.AdamW, muon: torch.optim.Optimizer, graphed: bool = False):
        self.adamw, self.muon = adamw, muon
        self.graph = MuonGraph() if graphed else None  # Muon's step from a CUDA graph (--cuda_graphs)
        super().__init__([{"params": g["params"]} for g in adamw.param_groups + muon.param_groups], {})
        self._link()

    def _link(self) -> None:
        # (Optimizer.state_dict reads param_groups and state: the children's, here.)
        self.param_groups = self.adamw.param_groups + self.muon.param_groups
        self.state = _States(self.adamw.state, self.muon.state)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.adamw.step()
        if self.graph is not None:
            self.graph.step(self.muon)
        else:
            muon_step(self.muon)
        return loss

    def load_state_dict(self, state_dict: dict) -> None:
        groups = state_dict["param_groups"]
        kinds = [bool(g.get("muon")) for g in groups]
        if kinds != [bool(g.get("muon")) for g in self.param_groups]:
            raise ValueError(f"the state's groups (muon: {kinds}) are not this optimizer's")
        n = len(self.adamw.param_groups)
        for child, part in ((self.adamw, groups[:n]), (self.muon, groups[n:])):
            ids = {i for g in part for i in g["params"]}
            child.load_state_dict({"state": {i: s for i, s in state_dict["state"].items() if i in ids},
                                   "param_groups": part})
        self._link()  # load_state_dict gave the children new group dicts and states


# Matrices orthogonalized in one batch at most: a bound on the stacked copy's memory (256 MB in
# float32), which a 750M model's 24 MLP matrices of 6144 x 1536 would otherwise take 0.9 GB.
# Under FSDP also the most a rank holds whole in one exchange round (_rounds): the rows it
# receives, the matrices put together from them and their stack, as much again each.
BATCH_ELEMENTS = 1 << 26


def orthogonalize(stack: torch.Tensor, group: dict) -> torch.Tensor:
    """Muon's quintic Newton-Schulz iteration, torch.optim.Muon's, on a stack (n, rows, cols) of
    matrices of one shape: each product is one batched matmul for all n. In bfloat16 as torch
    runs it, except on a CPU that does not multiply bfloat16 in hardware (cpu_runs_bf16: no AMX,
    no AVX512-BF16): in float32 there, 24x faster than its emulated bfloat16 (the demo model's
    16 matrices: 32 against 767 ms a step). With AVX512-BF16 (a Zen 4 EPYC) bfloat16 is the
    faster: the demo model's step 10.0 against 16.6 ms, the baby GPT's matrices about 2x."""
    a, b, c = group["ns_coefficients"]
    x = stack.to(torch.bfloat16 if stack.device.type != "cpu" or cpu_runs_bf16() else torch.float32)
    tall = x.size(-2) > x.size(-1)
    if tall:  # iterate on the wide side: its Gram matrix is the smaller one
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=group["eps"])  # spectral norm at most 1
    for _ in range(group["ns_steps"]):
        gram = x @ x.mT
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.mT if tall else x


@torch.no_grad()
def muon_step(muon: torch.optim.Optimizer) -> None:
    """One step of torch.optim.Muon's algorithm over its own groups and state (momentum_buffer:
    checkpoints and resumes are torch's), with the matrices of one shape orthogonalized
    together. torch's step loops over the matrices, ~20 kernels each: on a GPU those launches
    took longer than the model's own step at nanoGPT's baby size (33 against 12 ms, H200).
    The update equals torch's per matrix: nesterov momentum, decoupled weight decay, the
    learning rate scaled by the shape as adjust_lr_fn says (_lr_scale)."""
    for group, params in _stepped(muon):
        _update(params, [p.grad for p in params], _momentum_buffers(muon, params), group, float(group["lr"]))


def _stepped(muon: torch.optim.Optimizer) -> list[tuple[dict, list[torch.Tensor]]]:
    """Each group with its parameters that have a gradient (the groups without any left out)."""
    stepped = [(group, [p for p in group["params"] if p.grad is not None]) for group in muon.param_groups]
    return [(group, params) for group, params in stepped if params]


def _momentum_buffers(muon: torch.optim.Optimizer, params: list[torch.Tensor]) -> list[torch.Tensor]:
    for p in params:
        if "momentum_buffer" not in muon.state[p]:
            muon.state[p]["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
    return [muon.state[p]["momentum_buffer"] for p in params]


def _update(params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor], group: dict,
            lr: float | torch.Tensor) -> None:
    """One group's step (muon_step's), the rate a number, or a 0-d tensor on the GPU that a
    CUDA graph reads when it replays (MuonGraph)."""
    momentum = group["momentum"]
    torch._foreach_lerp_(bufs, grads, 1 - momentum)
    updates = torch._foreach_lerp(grads, bufs, momentum) if group["nesterov"] else bufs
    torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
    orthogonalized = _sharded_orthogonalized if hasattr(params[0], "device_mesh") else _orthogonalized
    for part, deltas in orthogonalized(params, updates, group):
        rows, cols = params[part[0]].shape
        step = -lr * _lr_scale(group["adjust_lr_fn"], rows, cols)
        if isinstance(step, torch.Tensor):  # (foreach_add_ takes its alpha as a number only)
            torch._foreach_add_([params[i] for i in part], torch._foreach_mul(deltas, step))
        else:
            torch._foreach_add_([params[i] for i in part], deltas, alpha=step)


def _batches(params: list[torch.Tensor], index: list[int]) -> list[list[int]]:
    """The matrices `index` (of `params`) in the batches orthogonalize takes: one shape and
    dtype each, of at most BATCH_ELEMENTS elements (one matrix at least)."""
    by_shape: dict[tuple, list[int]] = {}
    for i in index:
        by_shape.setdefault((tuple(params[i].shape), params[i].dtype), []).append(i)
    batches = []
    for (shape, _), same in by_shape.items():
        per_batch = max(1, BATCH_ELEMENTS // math.prod(shape))
        batches += [same[start:start + per_batch] for start in range(0, len(same), per_batch)]
    return batches


def _orthogonalized(params: list[torch.Tensor], updates: list[torch.Tensor], group: dict):
    """(batch, its orthogonalized updates) for every batch of matrices, in one process."""
    for part in _batches(params, list(range(len(params)))):
        ortho = orthogonalize(torch.stack([updates[i] for i in part]), group).to(params[part[0]].dtype)
        yield part, list(ortho.unbind(0))


def _sharded_orthogonalized(params: list[torch.Tensor], updates: list[torch.Tensor], group: dict):
    """_orthogonalized for FSDP's shards (DTensors, rows split over the ranks as torch.chunk
    splits them): the whole matrix is orthogonalized (it is not row by row), by one rank, its
    owner (_owners), which receives every rank's rows of it and sends each rank its rows of the
    result (two all_to_all per round, _rounds). So each rank iterates on 1/N of the matrices,
    where gathering every matrix on every rank had each do all of them (N times the work), and
    receives about 2/N of their elements instead of (N-1)/N. (bench/muon_step.py --fsdp_ranks 2:
    the baby GPT's step 345 against 607 ms on 2 CPU ranks, 1.8x.)"""
    from torch.distributed.tensor import DTensor, Shard

    mesh = params[0].device_mesh
    pg = mesh.get_group()
    world, rank = torch.distributed.get_world_size(pg), torch.distributed.get_rank(pg)
    local = [u.to_local() for u in updates]
    rows = [_chunk_rows(p.size(0), world) for p in params]  # rows[i][r]: rank r's rows of matrix i
    for i, p in enumerate(params):
        assert p.placements == (Shard(0),) and local[i].size(0) == rows[i][rank], (p.placements, local[i].shape)
    dtype = functools.reduce(torch.promote_types, [u.dtype for u in local])  # (one buffer per exchange)
    device = local[0].device
    for plan in _rounds(params, _owners([tuple(p.shape) for p in params], world), world):
        mine = plan[rank]
        # Every rank's rows of each matrix to its owner, who stacks them (rank order is row order).
        got = _all_to_all([[local[i] for i in plan[o]] for o in range(world)],
                          [[rows[i][s] * params[i].size(1) for i in mine] for s in range(world)], dtype, device, pg)
        whole = {i: torch.cat([got[s][k].view(rows[i][s], params[i].size(1)) for s in range(world)])
                 for k, i in enumerate(mine)}
        done = {}
        for part in _batches(params, mine):
            ortho = orthogonalize(torch.stack([whole[i] for i in part]), group).to(params[part[0]].dtype)
            done.update(zip(part, ortho.unbind(0)))
        # The owner's result back, each rank's rows to it.
        got = _all_to_all([[done[i].narrow(0, sum(rows[i][:s]), rows[i][s]) for i in mine] for s in range(world)],
                          [[rows[i][rank] * params[i].size(1) for i in plan[o]] for o in range(world)],
                          dtype, device, pg)
        deltas = {i: got[o][k].view(rows[i][rank], params[i].size(1)).to(params[i].dtype)
                  for o in range(world) for k, i in enumerate(plan[o])}
        for part in _batches(params, [i for index in plan for i in index]):
            yield part, [DTensor.from_local(deltas[i], mesh, params[i].placements, run_check=False,
                                            shape=params[i].shape, stride=params[i].stride()) for i in part]


def _chunk_rows(n: int, world: int) -> list[int]:
    """Each rank's rows of a matrix of `n` rows sharded Shard(0) over `world` ranks: torch.chunk's
    split (ceil(n / world) each, the last ranks fewer or none), FSDP2's and DTensor's."""
    size = -(-n // world)
    return [max(0, min(n, size * (r + 1)) - size * r) for r in range(world)]


def _owners(shapes: list[tuple[int, int]], world: int) -> list[int]:
    """The rank that orthogonalizes each matrix: the largest first, each to the rank with the
    least work so far (the lowest of equals). The work is rows x cols x min(rows, cols), as the
    iteration's matmuls' multiply-adds grow. Every rank computes the same answer."""
    work, owners = [0] * world, [0] * len(shapes)
    for i in sorted(range(len(shapes)), key=lambda i: -math.prod(shapes[i]) * min(shapes[i])):
        owners[i] = min(range(world), key=lambda r: work[r])
        work[owners[i]] += math.prod(shapes[i]) * min(shapes[i])
    return owners


def _rounds(params: list[torch.Tensor], owners: list[int], world: int) -> list[list[list[int]]]:
    """rounds[k][r]: the matrices rank r orthogonalizes in the k-th exchange, at most
    BATCH_ELEMENTS elements (one matrix at least): what a rank holds whole at once. Ranks with
    fewer rounds take part in the others' with nothing of their own."""
    rounds: list[list[list[int]]] = []
    for r in range(world):
        k, size = 0, 0
        for i in (i for i, o in enumerate(owners) if o == r):
            if size and size + params[i].numel() > BATCH_ELEMENTS:
                k, size = k + 1, 0
            if k == len(rounds):
                rounds.append([[] for _ in range(world)])
            rounds[k][r].append(i)
            size += params[i].numel()
    return rounds


def _all_to_all(send: list[list[torch.Tensor]], sizes: list[list[int]], dtype: torch.dtype, device: torch.device,
                pg) -> list[list[torch.Tensor]]:
    """send[r]: the tensors for rank r; sizes[r]: the sizes (elements) of those rank r sends
    here. Returns them from each rank, flat. One all_to_all_single, which every rank calls."""
    nothing = torch.empty(0, dtype=dtype, device=device)  # (torch.cat takes no empty list)
    flat = torch.cat([t.reshape(-1).to(dtype) for ts in send for t in ts] + [nothing])
    out = torch.empty(sum(map(sum, sizes)), dtype=dtype, device=device)
    torch.distributed.all_to_all_single(out, flat, [sum(n) for n in sizes], [sum(t.numel() for t in ts) for ts in send],
                                        group=pg)
    return [list(part.split(n)) for part, n in zip(out.split([sum(n) for n in sizes]), sizes)]


class MuonGraph:
    """muon_step replayed from one CUDA graph (--cuda_graphs): the step's ~100 kernels cost the
    host ~3 ms to launch one by one, where the GPU does them in well under one (the baby GPT on
    an H200). The graph reads the gradients from buffers of its own (copied in each step) and
    the rates from 0-d tensors (filled each step); the matrices and momentum buffers it updates
    in place are the optimizer's own, so checkpoints and resumes see them as ever. The first
    WARM steps after a change (the first step, a resume's new state, other hyperparameters)
    run the same kernels unrecorded, as a capture needs, then the graph is recorded."""

    WARM = 3

    def __init__(self):
        self.key, self.held, self.graph, self.warm, self.rates, self.grads = None, None, None, 0, [], []

    @torch.no_grad()
    def step(self, muon: torch.optim.Optimizer) -> None:
        stepped = _stepped(muon)
        if not stepped:
            return None
        if any(hasattr(p, "device_mesh") for _, params in stepped for p in params):
            return muon_step(muon)  # (FSDP's shards: the exchange is collectives, not captured)
        # Streams and captures are the current device's: make it the matrices' (fit does not
        # set it; a model on cuda:1 would be captured on cuda:0).
        device = stepped[0][1][0].device
        with torch.cuda.device(device):
            return self._step(muon, stepped, device)

    def _step(self, muon: torch.optim.Optimizer, stepped: list, device: torch.device) -> None:
        bufs = [_momentum_buffers(muon, params) for _, params in stepped]
        key = tuple((tuple(map(id, params)), tuple(map(id, b)),
                     *(repr(group[k]) for k in ("momentum", "nesterov", "weight_decay", "ns_coefficients",
                                                 "ns_steps", "eps", "adjust_lr_fn")))
                    for (group, params), b in zip(stepped, bufs))
        if key != self.key:  # what the graph would have baked in changed: record it anew
            # (Held, the tensors whose ids the key names stay alive: no new tensor can take an id.)
            self.key, self.held, self.graph, self.warm = key, (stepped, bufs), None, 0
            self.rates = [torch.zeros((), device=device) for _ in stepped]
        for rate, (group, _) in zip(self.rates, stepped):
            rate.fill_(float(group["lr"]))
        if self.graph is None and self.warm < self.WARM:
            self.warm += 1
            side = torch.cuda.Stream()  # warm-up on a side stream, as capturing wants
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for (group, params), b, rate in zip(stepped, bufs, self.rates):
                    _update(params, [p.grad for p in params], b, group, rate)
            torch.cuda.current_stream().wait_stream(side)
            return None
        if self.graph is None:
            self.grads = [[torch.empty_like(p.grad) for p in params] for _, params in stepped]
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, stream=torch.cuda.Stream()):  # (torch's default: one for all devices)
                for (group, params), grads, b, rate in zip(stepped, self.grads, bufs, self.rates):
                    _update(params, grads, b, group, rate)
        for (_, params), grads in zip(stepped, self.grads):
            torch._foreach_copy_(grads, [p.grad for p in params])
        self.graph.replay()
        return None


def _lr_scale(adjust_lr_fn: str | None, rows: int, cols: int) -> float:
    """torch.optim.Muon's scaling of the rate by the matrix's shape: "original" (Keller
    Jordan's, the default) or "match_rms_adamw" (Moonshot's)."""
    if adjust_lr_fn in (None, "original"):
        return math.sqrt(max(1, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return 1.0
