"""Branch and bound: complete search for the problems the bounds alone leave open.

A problem is one input set (batch entry) and one unsafe set ``⋃_k ⋂_{r∈k} {C_r y ≤ d_r}``
(:class:`~pacverify.verify.property.OutputProperty`). The search keeps a list of open subdomains
whose union covers the set, bounds many of them in one call of the bound routine, drops those
proved safe (:meth:`OutputProperty.proven` on their lower bounds) or empty (``infeasible``), and
splits the rest in two:

- **Input splitting** (boxes of low dimension, default ≤ 10 inputs, e.g. ACAS Xu): bisect the widest
  coordinate, or the one with the largest ``width_i · Σ_r |A_ri|`` (A the coefficients of CROWN's linear
  lower bounds of the rows, from the same pass as the bounds), or with the largest ``width_i · |∂v/∂x_i|``
  at the box centre, or ("lookahead", strong branching) bound both halves along every coordinate and keep
  the pair that proves both halves, else whose better half comes closest to a proof; one search per rule
  runs, the next batch going to the search that has done the least modelled work. The two halves cover the box.
- **ReLU splitting** (any set): fix one unstable neuron (pre-activation bounds l < 0 < u, not yet
  split) to inactive (−1: pre-activation ≤ 0) or active (+1: ≥ 0), per the split contract of
  :mod:`pacverify.verify.bounds.common`; the two sign cases cover the subdomain. The neuron is the
  one whose upper relaxation line costs the subdomain's CROWN lower bound the most: the intercept
  score of BaBSR (Bunel et al., *Branch and Bound for Piecewise Linear Neural Network
  Verification*, JMLR 2020), ``−min(a_i, 0) · (−s_i l_i)`` with a_i the bound's coefficient on the
  neuron's output and ``−s_i l_i`` the line's intercept — exactly what removing that intercept
  would add to the bound (:func:`intercept_scores`); where no neuron scores above 0, the one with
  the largest ``−l·u/(u − l) · ‖W_next[:, i]‖₁`` (the triangle's height times the outgoing weight).
  Subdomains are bounded with the root's intermediate (pre-activation) bounds, clamped to their
  splits, instead of recomputing them (β-CROWN's practice, Wang et al. 2021, §3): the root's bounds
  hold on every subdomain, the split constraints enter the final bound through β, and each
  subdomain then costs one optimised backward pass instead of one per ReLU layer. The root's
  bounds are optimised once per problem by α-CROWN
  (:func:`~pacverify.verify.bounds.alpha.optimised_intermediate`). A child's α-CROWN ascent starts from
  its parent's final slopes and multipliers (β-CROWN's warm start); any start is sound
  (:func:`~pacverify.verify.bounds.alpha.alpha_crown_warm`). On a float64 network the ascent's steps run in
  float32 and only choose the multipliers; each subdomain's bound is computed in float64 at the best of them.

Each clause of the unsafe set is searched on its own (the set is unreachable iff every clause is, and a
clause alone usually needs far fewer subdomains than the product of all their refinements): input
splitting runs all the clauses' searches side by side, one batch each in turn; ReLU splitting searches
them one after another, each with an equal share of the time left, and a ReLU search that runs out of its
share is paused and resumes with the time the clauses after it leave.

Verdicts, per problem: VERIFIED when no open subdomain is left (every one proved or empty — the
subdomains cover the set, so no input reaches the unsafe set); FALSIFIED when a candidate point (box
centres and the vertices minimising CROWN's linear bounds for input splitting; PGD on the whole set every
few rounds for ReLU splitting) lies in the set and a float64 forward pass puts it in the unsafe set;
UNKNOWN when the time or domain
budget runs out, or when a subdomain has no neuron or coordinate left to split and is not decided
exactly: for box sets such a fully split subdomain is decided by a linear program with a
closed-form dual bound (:mod:`.bab_leaf`), which keeps ReLU splitting complete on boxes; for L2
balls it stays open.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from pacverify.errors import InputError
from pacverify.network import LINEAR, Network, Relu
from pacverify.validation import check_positive
from pacverify.verify.attacks import attack_set, bound_guided_attack, confirm
from pacverify.verify.bab_leaf import decide_leaf, leaf_phases
from pacverify.verify.bab_pool import SubdomainPool
from pacverify.verify.bounds import (
    BOUND_METHODS,
    alpha_crown,
    check_bound_method,
    crown,
    crown_f32,
    crown_ibp,
)
from pacverify.verify.bounds.alpha import Multipliers, alpha_crown_warm, optimised_intermediate
from pacverify.verify.bounds.coefficients import lower_bound_coefficients
from pacverify.verify.bounds.common import abs_column_sums, output_layers
from pacverify.verify.bounds.crown import crown_with_coefficients
from pacverify.verify.bounds.linear import Rows, pull_back
from pacverify.verify.bounds.relax import relax_relu
from pacverify.verify.bounds.types import Bounds
from pacverify.verify.property import OutputProperty
from pacverify.verify.result import Decision, PointVerdict
from pacverify.verify.sets import Box, InputSet

SPLIT_MODES = ("auto", "input", "relu")
BRANCHING_RULES = ("widest", "bound", "gradient", "lookahead")   # input splitting: see _bisect, _pick_halves
DEFAULT_BRANCHING = ("lookahead",)   # the rules input splitting runs by default (docs/verifier.md)
PRIOR_RULES = ("widest", "gradient", "lookahead")   # input-splitting rules whose boxes inherit their parent's bounds as prior
PRIOR_BYTES = 2**30   # the most bytes of inherited bounds one input-splitting search keeps; beyond, it keeps none
STATE_DTYPE = torch.float32   # open subdomains' inherited α, β: a warm start only, any value is sound
ROOT_PGD_STEPS = 20  # PGD steps from each clause row's bound minimiser at the root of ReLU splitting
ALPHA_STEP_WORK = 4   # modelled work of one α-CROWN step per row and map, in CROWN row-maps (_alpha_proved)
FALSIFY_ROWS = 32     # open subdomains per round whose bound minimisers are checked as counterexamples


@dataclass(frozen=True)
class BabConfig:
    """Budget and strategy of one branch-and-bound run (per problem).

    ``timeout``: seconds per problem (None: no limit); ``max_domains``: subdomains bounded per problem (a
    "lookahead" round bounds all 2m halves of each box it expands, so it may pass this by fewer than 2m);
    ``batch``: subdomains bounded per call; ``method``: the bound routine for subdomains ("ibp", "crown",
    "alpha-crown", or "auto": CROWN for input splitting, α-CROWN — with β-CROWN multipliers for the
    split neurons — for ReLU splitting); ``iterations``: optimisation steps of α-CROWN in the search;
    ``split``: "input", "relu", or "auto" (input splitting for boxes of at most ``input_split_max_dim``
    inputs, ReLU splitting otherwise); ``input_branching``: the branching rules input splitting runs side by
    side (:data:`BRANCHING_RULES`: :func:`_bisect`'s, and "lookahead", :func:`_pick_halves`); ``attack_every``: rounds between PGD runs during ReLU
    splitting; ``float32_ascent``: ReLU splitting's α-CROWN steps run in float32 on a float64 network, the
    bounds themselves in float64 (:mod:`~pacverify.verify.bounds.alpha`: sound either way; the same subdomain
    counts within 0.5% and ~1.3× faster on mnist-net_256x4); ``box_alpha_iterations``: α-CROWN steps input splitting
    spends on each box CROWN leaves open before splitting it (:func:`_alpha_proved`; 0: none); ``seed`` fixes
    those attacks.
    """

    timeout: float | None = None
    max_domains: int = 2_000_000
    batch: int = 512
    method: str = "auto"
    iterations: int = 8
    split: str = "auto"
    input_split_max_dim: int = 10
    input_branching: tuple[str, ...] = DEFAULT_BRANCHING
    attack_every: int = 8
    float32_ascent: bool = True
    box_alpha_iterations: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.timeout is not None:
            check_positive(self.timeout, "timeout")
        if self.split not in SPLIT_MODES:
            raise InputError(f"split must be one of {', '.join(SPLIT_MODES)}, got {self.split!r}")
        check_bound_method(self.method, extra=("auto",))
        rules = self.input_branching
        if not isinstance(rules, tuple) or not rules or len(set(rules)) != len(rules) \
                or any(rule not in BRANCHING_RULES for rule in rules):
            raise InputError(f"input_branching must be a tuple of distinct rules among {', '.join(BRANCHING_RULES)}, "
                             f"got {rules!r}")
        if not isinstance(self.float32_ascent, bool):
            raise InputError(f"float32_ascent must be True or False, got {self.float32_ascent!r}")
        for name in ("max_domains", "batch", "input_split_max_dim", "attack_every", "iterations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        value = self.box_alpha_iterations
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InputError(f"box_alpha_iterations must be an integer >= 0, got {value!r}")


def bound_routine(method: str, iterations: int = 20):
    """The bound routine named ``method`` in :data:`~pacverify.verify.bounds.BOUND_METHODS` (α-CROWN with
    ``iterations`` steps), called as ``f(net, input_set, C, splits=None, return_intermediate=False)``;
    only lower bounds are needed here, so CROWN and α-CROWN run in their lower-only mode."""
    routine = BOUND_METHODS[check_bound_method(method)]
    if routine is alpha_crown:
        return partial(alpha_crown, upper=False, iterations=iterations)
    if routine is crown or routine is crown_f32 or routine is crown_ibp:
        return partial(routine, upper=False)
    return routine


def branch_and_bound(net: Network, input_set: InputSet, prop: OutputProperty,
                     config: BabConfig = BabConfig()) -> list[Decision]:
    """Decide every problem of the batch (``input_set`` and ``prop`` of batch B) by branch and bound.

    Returns B decisions (module docstring for what each verdict guarantees); each problem gets its
    own ``config.timeout`` and ``config.max_domains``.
    """
    out = []
    for b in range(input_set.batch_size):
        index = torch.tensor([b])
        deadline = None if config.timeout is None else time.monotonic() + config.timeout
        out.append(_by_clause(net, input_set.select(index), prop.select(index), config, deadline))
    return out


def _by_clause(net: Network, input_set: InputSet, prop: OutputProperty, config: BabConfig,
               deadline: float | None) -> Decision:
    """One problem, one search per clause: the unsafe set is unreachable iff each clause is, and each
    clause usually needs far fewer subdomains alone than all of them in one tree. Clauses the root's
    bounds prove are skipped; the others are searched from the easiest (highest root margin) to the
    hardest, each with an equal share of the time left, so what easy clauses leave goes to the hard
    ones; ReLU searches that ran out of their share are paused and, while time is left, resumed
    one after another with equal shares of it, pass after pass (their open subdomains still cover the set). A
    counterexample to any clause ends the problem. Input splitting runs every clause's searches side by side
    instead (:func:`_input_bab`)."""
    input_splitting = _use_input_splitting(input_set, config)  # True only for boxes
    if input_splitting and isinstance(input_set, Box):
        clauses = [prop.clause_property(k) for k in range(prop.n_clauses)] if prop.n_clauses > 1 else [prop]
        return _input_bab(net, input_set, clauses, config, deadline)
    fixed = optimised_intermediate(net, input_set)
    if fixed is not None:
        # the minimisers of the tighter bounds are better starting points than those of the caller's CROWN
        found = bound_guided_attack(net, input_set, prop, intermediate=fixed, seed=config.seed, steps=ROOT_PGD_STEPS)
        if bool(found.found[0]):
            return Decision(PointVerdict.FALSIFIED, found.inputs[0].numpy(), 1,
                            "ReLU splitting: PGD from the optimised bounds' minimisers")

    paused: dict[int, _ReluSearch] = {}

    def search(k: int, deadline: float | None) -> Decision:
        clause = prop.clause_property(k) if prop.n_clauses > 1 else prop
        keep: list[_ReluSearch] = []
        decision = _relu_bab(net, input_set, clause, config, deadline, fixed, paused.pop(k, None), keep)
        if keep:
            paused[k] = keep[0]
        return decision

    if prop.n_clauses == 1:
        return search(0, deadline)
    method = config.method if config.method != "auto" else "alpha-crown"
    root = bound_routine(method, config.iterations)(net, input_set, prop.C.to(net.device, net.dtype),
                                                     intermediate=fixed)
    margin = prop.clause_values(root.lower.cpu().double() - prop.d.double())[0]        # (K,)
    todo = [int(k) for k in torch.argsort(margin, descending=True) if not bool(margin[k] > 0)]
    spent: dict[int, int] = {}
    # a clause is proved only by a search that decided it: one the time never reached stays open
    open_details: dict[int, str] = {k: f"clause {k}: not searched, the time ran out first" for k in todo}
    # a first pass gives each clause an equal share of the time left; paused ReLU searches then resume,
    # one after another, with equal shares of what the others left, pass after pass while time is left (a pass
    # ends before the deadline only when its last search ended before its share: decided, or out of subdomains)
    order = todo
    while order:
        for i, k in enumerate(order):
            if deadline is not None and time.monotonic() >= deadline:
                break
            share = None if deadline is None else time.monotonic() + (deadline - time.monotonic()) / (len(order) - i)
            decision = search(k, share)
            spent[k] = decision.domains
            if decision.verdict is PointVerdict.FALSIFIED:
                return Decision(PointVerdict.FALSIFIED, decision.counterexample, 1 + sum(spent.values()),
                                f"clause {k}: {decision.detail}")
            open_details.pop(k, None)
            if decision.verdict is PointVerdict.UNKNOWN:
                open_details[k] = f"clause {k}: {decision.detail}"
        if deadline is None or time.monotonic() >= deadline:
            break
        order = [k for k in todo if k in paused and paused[k].domains < config.max_domains]
    domains = 1 + sum(spent.values())
    if open_details:
        return Decision(PointVerdict.UNKNOWN, domains=domains, detail="; ".join(open_details.values()))
    return Decision(PointVerdict.VERIFIED, domains=domains,
                    detail=f"{prop.n_clauses} clauses proved one by one, {domains} subdomains")


def _use_input_splitting(input_set: InputSet, config: BabConfig) -> bool:
    if config.split == "relu":
        return False
    if config.split == "input":
        if not isinstance(input_set, Box):
            raise InputError("input splitting needs box input sets (L∞ or VNN-LIB); use split='relu' for L2 balls")
        return True
    return isinstance(input_set, Box) and input_set.dim <= config.input_split_max_dim


def _out_of_budget(deadline: float | None, domains: int, config: BabConfig) -> bool:
    return (deadline is not None and time.monotonic() > deadline) or domains >= config.max_domains


class _Pace:
    """How many subdomains the next round may bound: ``config.batch``, fewer when the measured seconds
    per subdomain say a full batch would overrun the deadline (so the search stops near its timeout)."""

    def __init__(self, config: BabConfig, deadline: float | None) -> None:
        self.config, self.deadline, self.per_domain, self.started = config, deadline, 0.0, 0.0

    def size(self) -> int:
        """Subdomains to bound in the next round."""
        batch = self.config.batch
        if self.deadline is not None and self.per_domain > 0:
            batch = max(1, min(batch, int((self.deadline - time.monotonic()) / self.per_domain)))
        return batch

    def start(self) -> None:
        """The round's bounding starts now (:meth:`done` measures from here)."""
        self.started = time.monotonic()

    def take(self, priority: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices of the open subdomains to bound now (lowest proof margin first), and of the rest."""
        batch = self.size()
        order = torch.argsort(priority)
        self.start()
        return order[:batch], order[batch:]

    def done(self, count: int) -> None:
        if count < min(64, self.config.batch):      # small rounds are dominated by fixed costs
            return
        seconds = (time.monotonic() - self.started) / count
        self.per_domain = seconds if self.per_domain == 0 else 0.5 * (self.per_domain + seconds)


def _input_bab(net: Network, box: Box, clauses: list[OutputProperty], config: BabConfig, deadline: float | None
               ) -> Decision:
    """Input splitting of every clause with the branching rules of ``config.input_branching`` (by default "lookahead"
    alone; several run as a portfolio, as rules may fail on different instances): one search per clause and rule.
    The clauses still open take turns one round (one batch of subdomains) at a time; within a clause the round goes
    to the search that has done the least work so far (:attr:`_InputSearch.work`: CROWN rows pulled back × linear
    maps crossed, plus :func:`_alpha_proved`'s model of its α-CROWN steps, or subdomains bounded
    where the bound routine does not count rows; ties to the earlier rule), until each clause is proved by one
    of its searches, one finds a counterexample, the deadline passes or ``max_domains`` subdomains are bounded in
    all. Each search alone covers the box, so any one's verdict decides its clause (the unsafe set is
    unreachable iff every clause is); a clause is decided once its best rule alone would have been, with every
    other search at most one of its rounds past that work; the work is counted, not timed, so the search stays
    reproducible. (Turns by rounds gave a rule whose rounds cost more most of the time: the "bound" search,
    bounded without priors, left 3_3 prop_2 of ACAS Xu to 104 s where its lookahead search alone needs 18 s.)"""
    searches = {k: [_InputSearch(net, box, clause, config, deadline, rule) for rule in config.input_branching]
                for k, clause in enumerate(clauses)}
    proved: dict[int, _InputSearch] = {}   # the search that proved each clause
    domains = 0

    def name(k: int) -> str:
        return f"clause {k}: " if len(clauses) > 1 else ""

    while len(proved) < len(clauses):
        for k in [k for k in searches if k not in proved]:
            search = min(searches[k], key=lambda s: s.work)        # the first of the least worked
            if _out_of_budget(deadline, domains, config):
                open_ = "; ".join(f"{name(j)}subdomains open per branching rule: "
                                  + ", ".join(f"{s.rule} {s.open}" for s in searches[j])
                                  for j in searches if j not in proved)
                return Decision(PointVerdict.UNKNOWN, domains=domains,
                                detail=f"input splitting: budget spent; {open_}")
            before = search.domains
            decision = search.round(config.max_domains - domains)
            domains += search.domains - before
            if decision is None:
                continue
            if decision.verdict is not PointVerdict.VERIFIED:
                return Decision(decision.verdict, decision.counterexample, domains, name(k) + decision.detail)
            proved[k] = search
    how = ", ".join(f"{name(k)}{proved[k].rule} branching, {proved[k].domains}" for k in sorted(proved))
    return Decision(PointVerdict.VERIFIED, domains=domains,
                    detail=f"input splitting: proved by {how} subdomains; {domains} bounded in all")


class _InputSearch:
    """One input-splitting search with branching ``rule``: its open boxes (a :class:`SubdomainPool`, bounded lowest
    proof margin first) and, for the rules of :data:`PRIOR_RULES`, each box's parent's pre-activation bounds, its
    pass's ``prior`` (docs/verifier.md, "Input splitting", for why not every rule), until they would take more
    than :data:`PRIOR_BYTES`: the search then goes on without priors (sound either way; only slower)."""

    def __init__(self, net: Network, box: Box, prop: OutputProperty, config: BabConfig, deadline: float | None,
                 rule: str) -> None:
        box = box.to(net.device, net.dtype)                 # rounded outward: still contains the original box
        self.net, self.prop, self.config, self.rule = net, prop, config, rule
        # fields: lower and upper corners, then (with priors) each ReLU layer's lower and upper pre-activation bound
        self.pool = SubdomainPool([box.lower, box.upper], torch.zeros(1, dtype=net.dtype, device=net.device))
        self.has_prior = False
        self.keep_prior = rule in PRIOR_RULES and _search_method(config) == "crown"   # only CROWN takes priors
        self.domains = 0
        self.work = 0       # the bound passes' rows × maps (PropagationResult.row_maps), else subdomains bounded
        self.pace = _Pace(config, deadline)

    @property
    def open(self) -> int:
        return len(self.pool)

    def round(self, allowed: int) -> Decision | None:
        """Bound at most ``allowed`` (≥ 1) boxes — for "lookahead", whole sets of 2m halves, so at least one set of
        2m however small ``allowed`` is: for the bisection rules, open boxes, of which those not proved safe or empty
        are split in two; for "lookahead", both halves along every coordinate of open boxes, of which each box keeps
        the pair :func:`_pick_halves` picks. A decision when that settles the problem (VERIFIED once no box is open;
        FALSIFIED when a box's centre or one of its bound minimisers is a confirmed counterexample), else None."""
        net, config = self.net, self.config
        size = min(self.pace.size(), allowed)
        per_box = 2 * self.pool.fields[0].shape[1] if self.rule == "lookahead" else 1
        rows, _ = self.pool.take(max(1, size // per_box))
        self.pace.start()
        lo, hi = rows[0], rows[1]
        prior = list(zip(rows[2::2], rows[3::2], strict=True)) if self.has_prior else None
        if self.rule == "lookahead":
            lo, hi, splittable = _all_halves(lo, hi)
            prior = None if prior is None else [(a.repeat(per_box, 1), b.repeat(per_box, 1)) for a, b in prior]
        rep = self.prop.select(torch.zeros(lo.shape[0], dtype=torch.long)).to(net.device, net.dtype)
        result, A = _bounds_and_coefficients(net, Box(lo, hi), rep.C, config, prior)
        self.domains += lo.shape[0]
        self.work += result.row_maps if result.row_maps is not None else lo.shape[0]
        self.pace.done(lo.shape[0])
        margin = rep.proof_margin(result.bounds.lower)
        proved = result.bounds.infeasible | (margin > 0)
        pre_activation = result.pre_activation
        if self.rule == "lookahead":
            # every open half is a candidate, not only the kept ones: a counterexample can lie in either pair
            unproved = torch.nonzero(~proved).reshape(-1)
            if unproved.numel():
                part = rep.select(unproved.cpu())
                A_part = A[unproved] if A is not None else \
                    lower_bound_coefficients(net, Box(lo[unproved], hi[unproved]), part.C)
                found = _box_candidates(net, part, lo[unproved], hi[unproved], A_part)
                if found is not None:
                    return Decision(PointVerdict.FALSIFIED, found[0], self.domains, f"input splitting: {found[1]}")
            pick = _pick_halves(margin, proved, splittable)
            if pick is None:
                return Decision(PointVerdict.UNKNOWN, domains=self.domains, detail="input splitting: a box cannot be split")
            lo, hi, margin, proved, rep = lo[pick], hi[pick], margin[pick], proved[pick], rep.select(pick.cpu())
            pre_activation = [(a[pick], b[pick]) for a, b in pre_activation]
        open_ = torch.nonzero(~proved).reshape(-1)
        if config.box_alpha_iterations and open_.numel():
            lower = result.bounds.lower if self.rule != "lookahead" else result.bounds.lower[pick]
            tight, work = _alpha_proved(net, lo[open_], hi[open_], rep.select(open_.cpu()), lower[open_],
                                        [(a[open_], b[open_]) for a, b in pre_activation], config.box_alpha_iterations)
            self.work += work
            open_ = open_[~tight]
        lo, hi, margin, rep = lo[open_], hi[open_], margin[open_], rep.select(open_.cpu())
        pre = [t[open_] for pair in pre_activation for t in pair] if self.keep_prior else []
        if lo.shape[0]:
            if self.rule != "lookahead":   # the open boxes' halves, to be bounded next with the boxes' bounds as prior
                A = A[open_] if A is not None else lower_bound_coefficients(net, Box(lo, hi), rep.C)
                found = _box_candidates(net, rep, lo, hi, A)
                if found is not None:
                    return Decision(PointVerdict.FALSIFIED, found[0], self.domains, f"input splitting: {found[1]}")
                lo, hi = _bisect(net, rep, lo, hi, A, self.rule)
                if lo is None:
                    return Decision(PointVerdict.UNKNOWN, domains=self.domains,
                                    detail="input splitting: a box cannot be split")
                margin, pre = margin.repeat(2), [t.repeat(2, 1) for t in pre]
        # pre-activation bounds that hold on each new box (its parent's, or its own for "lookahead"); they are kept
        # from the first round on, when the pool holds no box without them
        if pre and not self.has_prior and not len(self.pool):
            self.pool.add_fields(pre)
            self.has_prior = True
        elif self.has_prior and not pre:     # no bounds for the new boxes: keep none, so rows stay aligned
            self.pool.drop_fields(2)
            self.has_prior = self.keep_prior = False
        self.pool.put([lo, hi] + (pre if self.has_prior else []), margin)
        if self.has_prior and self.pool.field_bytes(2) > PRIOR_BYTES:
            self.pool.drop_fields(2)
            self.has_prior = self.keep_prior = False
        if len(self.pool):
            return None
        return Decision(PointVerdict.VERIFIED, domains=self.domains)


def _alpha_proved(net: Network, lo: torch.Tensor, hi: torch.Tensor, prop: OutputProperty, lower: torch.Tensor,
                  pre_activation: list[tuple[torch.Tensor, torch.Tensor]], iterations: int) -> tuple[torch.Tensor, int]:
    """Which boxes (n, m) α-CROWN proves where CROWN did not, and the work it modelled (as :attr:`_InputSearch.work`).

    ``lower`` (n, R): CROWN's lower bounds of ``prop``'s rows on the boxes; ``pre_activation``: pre-activation bounds
    proved on each box (its own CROWN pass's). Only each clause's row with the highest CROWN margin is optimised
    (:meth:`OutputProperty.best_rows`: a proof of that row proves its clause), over the ReLU lower slopes with those
    pre-activation bounds fixed, so a step pulls back one row per clause and no intermediate row: on the boxes left
    open after 40 s of ACAS Xu 4_2 prop_2, 5 steps prove 495 of 512 at about the cost of one CROWN pass with priors
    (docs/verifier.md, "Branch and bound"). Sound as :func:`~pacverify.verify.bounds.alpha.alpha_crown`: any slopes
    give a valid bound. A step is counted as :data:`ALPHA_STEP_WORK` row-maps per row and map: with its autograd pass
    it costs 4–8 times a CROWN row's (more on smaller batches; measured on ACAS Xu)."""
    best = prop.best_rows(lower)
    # stopping once every bound is > 0 is stopping once every box is proved only where no row needs more than 0
    tight = alpha_crown(net, Box(lo, hi), best.C, intermediate=pre_activation, upper=False, iterations=iterations,
                        stop_when_positive=bool((best.d <= 0).all()))
    assert isinstance(tight, Bounds)
    maps = sum(not isinstance(layer, Relu) for layer in net.layers)
    work = ALPHA_STEP_WORK * (iterations + 1) * lo.shape[0] * best.C.shape[1] * maps
    return tight.infeasible | (best.proof_margin(tight.lower) > 0), work


def _all_halves(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Both halves of each box (n, m) along every coordinate: (2·m·n, m) each, the half ``s`` (0: lower) of box p
    along coordinate k at row ``(2k + s)·n + p``, and (m, n) whether both halves along k are smaller than the box
    (the midpoint strictly inside: else one half is the box itself). Each pair of halves covers its box."""
    n, m = lo.shape
    rows = torch.arange(n, device=lo.device)
    out_lo, out_hi, splittable = [], [], []
    for k in range(m):
        mid = (lo[:, k] + hi[:, k]) / 2
        left_hi, right_lo = hi.clone(), lo.clone()
        left_hi[rows, k] = mid
        right_lo[rows, k] = mid
        out_lo += [lo, right_lo]
        out_hi += [left_hi, hi]
        splittable.append((mid > lo[:, k]) & (mid < hi[:, k]))
    return torch.cat(out_lo), torch.cat(out_hi), torch.stack(splittable)


def _pick_halves(margin: torch.Tensor, proved: torch.Tensor, splittable: torch.Tensor) -> torch.Tensor | None:
    """Rows of :func:`_all_halves`' output to keep, given the halves' proof margins and proved flags (2·m·n,) and
    its ``splittable`` (m, n): for each parent box, the pair of halves along the coordinate whose halves are both
    proved, else whose better half has the highest proof margin (strong branching: the split that comes closest
    to proving a half); never a coordinate that is not splittable. None when some box has none."""
    m, parents = splittable.shape
    empty = proved & ~(margin > 0)                          # proved empty: as good as any margin
    value = torch.where(empty, torch.finfo(margin.dtype).max, margin).view(m, 2, parents)
    score = torch.where(proved.view(m, 2, parents).all(1), torch.inf, value.amax(1))   # (m, parents)
    score = torch.where(splittable, score, -torch.inf)
    if not bool(splittable.any(0).all()):
        return None
    dim = score.argmax(0)
    first = 2 * dim * parents + torch.arange(parents, device=margin.device)
    return torch.cat([first, first + parents])


def _bounds_and_coefficients(net: Network, box: Box, C: torch.Tensor, config: BabConfig, prior):
    """The search's bounds on the boxes (with the pre-activation bounds they used) and, where the same pass
    gives them (CROWN), the coefficients of its linear lower bounds (else None: computed later for the open
    boxes only). ``prior``: pre-activation bounds proved on boxes that contain these (CROWN only)."""
    method = _search_method(config)
    if method == "crown":
        return crown_with_coefficients(net, box, C, prior=prior)[:2]
    return bound_routine(method, config.iterations)(net, box, C, return_intermediate=True), None


def _search_method(config: BabConfig) -> str:
    """Input splitting's bound method: CROWN unless the configuration names another."""
    return "crown" if config.method == "auto" else config.method


def _box_candidates(net: Network, prop: OutputProperty, lo: torch.Tensor, hi: torch.Tensor, A: torch.Tensor
                    ) -> tuple[np.ndarray, str] | None:
    """Check each open box's centre and, for every row, the vertex minimising CROWN's linear lower bound
    ``A·x + c`` (``lo`` where A > 0, ``hi`` elsewhere): a confirmed counterexample (float64) and where it came
    from, or None. Candidates only: :func:`~pacverify.verify.attacks.confirm` decides."""
    check = confirm(net, prop, (lo + hi) / 2, lo, hi)
    if check.found.any():
        return check.inputs[int(torch.nonzero(check.found)[0])].numpy(), "box centre"
    rows = A.shape[1]
    index = torch.arange(lo.shape[0], device=lo.device).repeat_interleave(rows)
    vertices = torch.where(A > 0, lo[:, None, :], hi[:, None, :]).reshape(-1, lo.shape[1])
    check = confirm(net, prop.select(index.cpu()), vertices, lo[index], hi[index])
    if check.found.any():
        return check.inputs[int(torch.nonzero(check.found)[0])].numpy(), "bound minimiser"
    return None


def _bisect(net: Network, prop: OutputProperty, lo: torch.Tensor, hi: torch.Tensor, A: torch.Tensor, rule: str):
    """Split each box (D, m) in two along its highest-scoring coordinate; (2D, m) each, or None if all widths are 0.

    Scores of coordinate i: rule "widest", ``width_i`` (the inputs as the network takes them, e.g. VNN-LIB's
    normalised ones); rule "bound", ``width_i · Σ_r |A_ri|`` with A (D, R, m) the coefficients of CROWN's linear
    lower bounds of the property's rows on the box (how much of each row's bound the width of coordinate i
    costs); rule "gradient", ``width_i · |∂v/∂x_i|`` at the box centre, v the property's violation. The
    widest coordinate where the score vanishes.
    """
    width = hi - lo
    if rule == "widest":
        score = width
    elif rule == "bound":
        score = width * A.abs().sum(dim=1)
    else:
        centre = ((lo + hi) / 2).detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(prop.violation(net(centre)).sum(), centre)
        score = width * grad.abs()
    score = torch.where(score.amax(1, keepdim=True) > 0, score, width)
    dim = score.argmax(1)
    rows = torch.arange(lo.shape[0], device=lo.device)
    if not bool((width[rows, dim] > 0).all()):
        return None, None
    mid = (lo[rows, dim] + hi[rows, dim]) / 2
    hi_left, lo_right = hi.clone(), lo.clone()
    hi_left[rows, dim] = mid
    lo_right[rows, dim] = mid
    return torch.cat([lo, lo_right]), torch.cat([hi_left, hi])


@dataclass
class _ReluSearch:
    """Where a ReLU-splitting search stopped when its time ran out: its open subdomains (splits, proof
    margins as priorities, inherited multipliers) and its counters, so that it can resume."""

    splits: list[torch.Tensor]
    priority: torch.Tensor
    multipliers: Multipliers | None = None
    domains: int = 0
    rounds: int = 0
    stuck: int = 0


def _relu_bab(net: Network, input_set: InputSet, prop: OutputProperty, config: BabConfig,
              deadline: float | None, fixed: list[tuple[torch.Tensor, torch.Tensor]],
              resume: _ReluSearch | None = None, keep: list[_ReluSearch] | None = None) -> Decision:
    """ReLU splitting of one problem (batch 1); ``fixed``: pre-activation bounds that hold on its whole
    input set, used for every subdomain (clamped to its splits). ``resume``: continue a search that ran
    out of time (its open subdomains still cover the set); when this one runs out of time, its state is
    appended to ``keep``. ``domains`` of the decision counts every subdomain bounded, resumed ones too."""
    method = "alpha-crown" if config.method == "auto" else config.method
    bound = bound_routine(method, config.iterations)
    warm = method == "alpha-crown"
    # with the root's pre-activation bounds kept, only the neurons unstable there can be unstable or split
    free = [torch.nonzero((lo[0] < 0) & (hi[0] > 0)).reshape(-1) for lo, hi in fixed]
    input_set = input_set.to(net.device, net.dtype)
    importance = _importance(net)
    if resume is None:
        resume = _ReluSearch([torch.zeros(1, w, dtype=torch.int8, device=net.device) for w in net.relu_widths()],
                             torch.zeros(1, dtype=net.dtype, device=net.device))
    splits, priority = resume.splits, resume.priority
    multipliers = resume.multipliers        # per open subdomain, when warm: its parent's α and β
    domains, rounds, stuck = resume.domains, resume.rounds, resume.stuck
    pace = _Pace(config, deadline)
    while priority.shape[0]:
        if _out_of_budget(deadline, domains, config):
            if keep is not None:
                keep.append(_ReluSearch(splits, priority, multipliers, domains, rounds, stuck))
            return Decision(PointVerdict.UNKNOWN, domains=domains, detail=f"ReLU splitting: budget spent, "
                                                                      f"{priority.shape[0] + stuck} subdomains open")
        rounds += 1
        if rounds % config.attack_every == 0:
            found = _attack_whole_set(net, input_set, prop, seed=config.seed + rounds)
            if found is not None:
                return Decision(PointVerdict.FALSIFIED, found, domains, "ReLU splitting: PGD")
        now, rest = pace.take(priority)
        batch_splits = [s[now] for s in splits]
        index = torch.zeros(now.shape[0], dtype=torch.long, device=net.device)
        rep = prop.select(index.cpu()).to(net.device, net.dtype)
        intermediate = [(lo.expand(now.shape[0], -1), hi.expand(now.shape[0], -1)) for lo, hi in fixed]
        if warm:
            start = None if multipliers is None else multipliers.select(now).to(net.dtype)
            result, ended = alpha_crown_warm(net, input_set.select(index), rep.C, splits=batch_splits,
                                             intermediate=intermediate, start=start, neurons=free,
                                             iterations=config.iterations,
                                             ascent_dtype=torch.float32 if config.float32_ascent else None)
        else:
            result = bound(net, input_set.select(index), rep.C, splits=batch_splits, intermediate=intermediate,
                           return_intermediate=True)
        domains += now.shape[0]
        pace.done(now.shape[0])
        margin = rep.proof_margin(result.bounds.lower)
        open_ = ~(result.bounds.infeasible | (margin > 0))
        if open_.any():
            open_rows = torch.nonzero(open_).reshape(-1)
            found = _bound_candidates(net, input_set.select(index[open_rows]), rep.select(open_rows.cpu()),
                                      [s[open_rows] for s in batch_splits], fixed)
            if found is not None:
                return Decision(PointVerdict.FALSIFIED, found, domains, "ReLU splitting: bound minimiser")
        layer, neuron = _choose_neurons(net, rep.C, result.pre_activation, batch_splits, importance)
        leaf = open_ & (layer < 0)
        for row in torch.nonzero(leaf).reshape(-1).tolist():
            answer = _solve_leaf(net, input_set, prop, result.pre_activation, batch_splits, row)
            if isinstance(answer, Decision):
                return Decision(answer.verdict, answer.counterexample, domains, answer.detail)
            stuck += int(not answer)
        grow = open_ & (layer >= 0)
        children = [s[grow] for s in batch_splits]
        rows = torch.arange(int(grow.sum()), device=net.device)
        left = [c.clone() for c in children]
        right = [c.clone() for c in children]
        for k in range(len(children)):
            pick = layer[grow] == k
            left[k][rows[pick], neuron[grow][pick]] = -1
            right[k][rows[pick], neuron[grow][pick]] = 1
        splits = [torch.cat([s[rest], lc, rc]) for s, lc, rc in zip(splits, left, right, strict=True)]
        if warm:
            inherited = ended.select(grow).to(STATE_DTYPE)
            multipliers = Multipliers.cat(([] if multipliers is None else [multipliers.select(rest)])
                                          + [inherited, inherited])
        priority = torch.cat([priority[rest], margin[grow].repeat(2)])
    if stuck:
        found = _attack_whole_set(net, input_set, prop, seed=config.seed + rounds + 1)
        if found is not None:
            return Decision(PointVerdict.FALSIFIED, found, domains, "ReLU splitting: PGD")
        return Decision(PointVerdict.UNKNOWN, domains=domains,
                        detail=f"ReLU splitting: {stuck} fully split subdomains not proved by the bounds")
    return Decision(PointVerdict.VERIFIED, domains=domains, detail=f"ReLU splitting: {domains} subdomains bounded")


def _solve_leaf(net: Network, input_set: InputSet, prop: OutputProperty, pre_activation, splits, row: int
                ) -> bool | Decision:
    """A subdomain with every neuron fixed: True if the LP of :mod:`.bab_leaf` proves it safe, a FALSIFIED
    decision if its candidate is a confirmed counterexample, False if undecided (or not a box)."""
    phases = leaf_phases(pre_activation, splits, row)
    if phases is None or not isinstance(input_set, Box):
        return False
    lower, upper = input_set.lower[0].double().cpu().numpy(), input_set.upper[0].double().cpu().numpy()
    answer = decide_leaf(net, lower, upper, phases, prop.C[0].double().cpu().numpy(),
                         prop.d[0].double().cpu().numpy(), prop.clause.cpu().numpy())
    if answer.candidate is not None:
        check = confirm(net, prop, torch.from_numpy(answer.candidate)[None], input_set.lower, input_set.upper)
        if bool(check.found[0]):
            return Decision(PointVerdict.FALSIFIED, check.inputs[0].numpy(), detail="ReLU splitting: LP at a leaf")
    return answer.proved


def _importance(net: Network) -> list[torch.Tensor]:
    """Per ReLU layer, ``‖W_next[:, i]‖₁`` of each neuron: the weight it carries into the next affine
    layer (1 for a ReLU layer that no affine layer follows)."""
    out: list[torch.Tensor] = []
    widths = net.relu_widths()
    layers = list(net.layers)
    for i, layer in enumerate(layers):
        if not isinstance(layer, LINEAR):
            nxt = next((later for later in layers[i + 1:] if isinstance(later, LINEAR)), None)
            out.append(torch.ones(widths[len(out)], dtype=net.dtype, device=net.device) if nxt is None
                       else abs_column_sums(nxt))
    return out


def intercept_scores(net: Network, C: torch.Tensor, pre_activation: list[tuple[torch.Tensor, torch.Tensor]]
                     ) -> list[torch.Tensor]:
    """BaBSR's intercept score of every ReLU neuron, one (B, width) tensor per ReLU layer.

    For the rows ``C`` (B, K, out) and CROWN's relaxation of the pre-activation bounds
    ``pre_activation``, CROWN's lower bound of row k is ``Σ_i min(a_ki, 0)·t_i + (terms that do not
    depend on the intercepts)``, a_ki the row's coefficient on neuron i's output and ``t_i = −s_i l_i``
    the intercept of its upper line (0 for stable neurons). The score ``Σ_k −min(a_ki, 0)·t_i`` is
    therefore exactly how much the rows' bounds, summed, would rise if neuron i's intercept were
    removed, which splitting the neuron does on both sides.
    """
    layers, C_left = output_layers(net, C)
    start = None if C_left is None else Rows(C_left, torch.zeros(C_left.shape[:-1], dtype=C.dtype, device=C.device))
    relaxations = [relax_relu(lo, hi) for lo, hi in pre_activation]
    coefficients: list[torch.Tensor] = []
    pull_back(layers, start, relaxations, both=False, record=coefficients)
    out = []
    for a, relax in zip(coefficients, relaxations, strict=True):
        a = a.expand(relax.lower.shape[0], -1, -1) if a.dim() == 2 else a      # shared rows (K, w)
        out.append(torch.clamp(-a, min=0).sum(1) * relax.up_intercept)
    return out


def _choose_neurons(net: Network, C: torch.Tensor, pre_activation, splits, importance
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per subdomain, the (layer, neuron) to split: among the unstable, unsplit neurons the one of
    highest :func:`intercept_scores`, or of highest triangle height × outgoing weight where no
    intercept score is above 0 (layer −1 if no neuron is left)."""
    batch = C.shape[0]
    if not pre_activation:                       # a network without ReLUs: nothing to split
        none = torch.full((batch,), -1, dtype=torch.long)
        return none, none.clone()
    candidates = [(lo < 0) & (hi > 0) & (split == 0) for (lo, hi), split in zip(pre_activation, splits, strict=True)]
    gaps = [-lo * hi / (hi - lo).clamp_min(torch.finfo(lo.dtype).tiny) * weight
            for (lo, hi), weight in zip(pre_activation, importance, strict=True)]
    value, layer, neuron = _best(intercept_scores(net, C, pre_activation), candidates)
    backup_value, backup_layer, backup_neuron = _best(gaps, candidates)
    use_backup = value <= 0
    layer = torch.where(use_backup, backup_layer, layer)
    neuron = torch.where(use_backup, backup_neuron, neuron)
    return torch.where(backup_value < 0, torch.full_like(layer, -1), layer), neuron


def _best(scores: list[torch.Tensor], candidates: list[torch.Tensor]
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row, the highest score over the candidate neurons of every layer: (value, layer, neuron),
    value −1 where a row has no candidate (scores are ≥ 0)."""
    best: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    for k, (score, candidate) in enumerate(zip(scores, candidates, strict=True)):
        value, neuron = torch.where(candidate, score, torch.full_like(score, -1.0)).max(dim=1)
        if best is None:
            best = value, torch.zeros_like(neuron), neuron
        else:
            better = value > best[0]
            best = (torch.where(better, value, best[0]), torch.where(better, torch.full_like(neuron, k), best[1]),
                    torch.where(better, neuron, best[2]))
    assert best is not None
    return best


def _bound_candidates(net: Network, input_set: InputSet, prop: OutputProperty, splits, fixed=None
                      ) -> np.ndarray | None:
    """Check the CROWN bound minimisers of the first :data:`FALSIFY_ROWS` subdomains (lowest margin first),
    with the pre-activation bounds ``fixed`` (batch 1) if given; a confirmed counterexample as a float64
    vector, or None."""
    keep = torch.arange(min(input_set.batch_size, FALSIFY_ROWS))
    intermediate = None if fixed is None else [(lo.expand(len(keep), -1), hi.expand(len(keep), -1))
                                                for lo, hi in fixed]
    res = bound_guided_attack(net, input_set.select(keep), prop.select(keep),
                              splits=None if splits is None else [s[keep] for s in splits],
                              intermediate=intermediate, steps=0)
    return res.inputs[int(torch.nonzero(res.found)[0])].numpy() if bool(res.found.any()) else None


def _attack_whole_set(net: Network, input_set: InputSet, prop: OutputProperty, *, seed: int):
    """PGD on the whole (batch-1) set; the confirmed counterexample as a float64 numpy vector, or None."""
    res = attack_set(net, input_set, prop, restarts=10, seed=seed)
    return res.inputs[0].numpy() if bool(res.found[0]) else None
