"""100 nodes in one simulation against 10 holding the same total data (issue #13 item 5).

    python -m sim.bench scale100     # P2PFL_SCALE100_ROUNDS=N, P2PFL_SCALE100_SHARDS=K

Runs `sim/scenarios/scale100.toml` (Fashion-MNIST split IID, MLP, committee 7, 5 rounds)
with 100 nodes (600 images each), then with 10 (6,000 each: the same 60,000 images
trained per round), both in `--shards 2` mode (two shard processes, one per core, each one
trio loop hosting half the nodes, anvil as the chain). Prints for each: rounds committed,
each round's wall time, the median round, the median of each phase (`sim.report.PHASES`:
the timeline of the earliest node to reach each step), each shard's CPU over the rounds
(user and system seconds per wall second: 1.0 is a whole core), the CPU a round (every
shard's loop and training processes from the start to the last commit, over the rounds) and
the loops' share of it a node (the protocol's cost a node-round, training apart); then the
ratios, 100 nodes / 10, of the median rounds (the target: <= 2), of the CPU a round and of
the protocol's CPU a node-round, and the machine's load average before and after (the
machine is shared: the other work's load is in these figures).

Measured 2026-12-05 (load 6.7 before, 5.7 after): 10 nodes 5/5 committed, median round
10.9 s (train 4.8 s, disseminate 5.2, aggregate 0.1, agree 0.6, commit 0.2), accuracy
0.817, each shard at 0.40-0.42 of a core. 100 nodes: all 100 started round 1 within
minutes, but NO round committed in the run's 1,200 s (round 1 reached its third attempt;
committee members had accepted 1-7 of the 100 updates), each shard at 0.37 of a core,
the event-loop thread nearly all of it and ~88% of that in the interpreter itself
(perf: crypto, protobuf and the kernel the rest). Before the heartbeat budget, the shared
registry reads and the pre-seeded genesis model, 22 of the 100 had not even started round 1
after 480 s.

Later the same day, nothing else running (load 0.4-1.7 before): 10 nodes 5/5, median
round 3.44-4.0 s (train 1.9, disseminate 1.3, agree 0.2), shards at 0.6 of a core. 100
nodes, four runs of 6-12 minutes, none committed round 1, both shards at 0.95 of a core
(py-spy: py-libp2p's yamux/noise/pubsub reading about half, chain reads for the registry
20% at the start). Each run found a cause of stalled rounds, fixed since: honest peers
banned for relaying messages of finished rounds (sync logs re-offer them), for signers
missing from a half-read registry, and for out-running the request rate limit with 100
fetches at once (now 8); members reaching only the 10-30 authors they were connected to
(now an address book, dialled on demand); 10% of the CPU in py-libp2p's task-tree walk.
The last run: members now accept 92-98 of the 100 updates, but attempt 0's members
fetched ~10 deltas each in the 60 s collect window and gossip had delivered 69% of the
updates everywhere after 5 minutes: per-message Python networking that grows with the
square of the node count.

Later still (same quiet machine; load 2.2 before, 2.1 after): 10 nodes 5/5, median round
3.375 s (train 2.0, disseminate 1.0, agree 0.2), accuracy 0.817. 100 nodes: **round 1
committed** in 115.6 s (train 24.6, disseminate 83.4, agree 6.5, all 100 updates in),
rounds 2-5 not within the 1,200 s guard (round 2 reached its third attempt); ratio of the
medians 34 (target <= 2), shards at 0.89 of a core. Per-shard counters of gossipsub RPCs
found what had kept every 100-node round from committing, all fixed in
p2pfl.net.pubsub_tuning / host / gossip: the message cache keyed by another id than the
seen-cache (every IHAVE drew an IWANT for a message already held: 96-99% of the received
update messages were duplicates), copies validated and forwarded again while the first
was being validated (46 copies per message), the cache window replayed to each new
connection, IDONTWANTs outnumbering the updates forwarded, our own signed record rebuilt
per RPC (8.6% of a shard), heartbeats most of the gossip (now kept out of sync logs,
skipped while other signed messages go out, and at scale every n^2/100 x 5 s), and 58% of
block-stream opens timing out at py-libp2p's 10 s negotiation limit (now 30 s). What is
left: each update and re-wrap still reaches every node (~6 copies each through the mesh),
which keeps both cores busy for minutes per round; block-stream opens then take over 10 s,
a member needs 60-100 s for the 100 deltas, and a round whose committee cannot finish is
re-drawn, its new members fetch everything again and the authors' re-wraps double the gossip.

Then (same quiet machine, load 0.09 before, 3.5 after), with updates and re-wraps pushed to
each attempt's committee with their deltas instead of gossiped (`[privacy] updates =
"committee"` in the scenario), the shard processes' GC thresholds raised (the collector had
been 56% of a shard's main-thread samples) and block answer buffers reused (15%): 10 nodes
5/5, median round 2.10 s (train 1.4, disseminate 0.3, agree 0.2), accuracy 0.817. 100
nodes **5/5 committed**: 22.8, 41.9, 46.5, 39.1, 37.1 s, median 39.1 s (train 14.8,
disseminate 17.8, aggregate 0.4, agree 4.9, commit 0.6), all 100 updates in each round,
accuracy 0.771 (centralised reference 0.772), shards at 0.74-0.78 of a core; ratio 18.6
(target <= 2).

Then (load 0.1 before, 2.5 after), with a shard's chain polls shared (one head read for its
50 nodes: polling had been 11% of a shard's samples), status.json written every 5 s at 100
nodes (7% of a shard at a round start) and each node's pull of the last round's updates
after its own next update is out: 10 nodes 5/5, median 2.03 s (train 1.2, disseminate 0.3,
agree 0.2), accuracy 0.817; 100 nodes **5/5**: 19.1, 32.9, 38.5, 39.8, 34.9 s, median
34.9 s (train 8.9, disseminate 16.3, aggregate 1.1, agree 6.2, commit 0.3), accuracy 0.771,
shards at 0.71-0.76 of a core; ratio 17.2 (target <= 2). Where it goes: shard CPU (user +
system) is ~3.5 core-seconds a round at 10 nodes and 56-74 at 100 (1.71 cores over the
217 s the figure covers, 165 s of them rounds), i.e. 0.35 and 0.56-0.74 per node.
Not the work itself: a round's pushes to the 7 members, model fetches and 60,000 trained
images come to ~7.3 core-seconds at 100 nodes (`python -m sim.bench netcost`, which times
each operation on hosts configured as these nodes): 3.6 s on two cores, within 2x the
10-node round. Connections to each round's new committee take ~15 (~550 new a round, 28 ms
each: the run ends with ~2,760), and the rest is per-message overhead spread thin
(py-spy: yamux frame reads ~10%, connection set-up ~10%, pubsub ~7%, chain reads ~8% --
since then taken from the commit the follower read --, blocks, sync, status, scheduling).
<= 2x needs that overhead cut ~8x; no single part of it is large enough.

2026-12-06, with each round's registry snapshot taken from the commit the follower read
(no snapshotBlock, block or taskInfo read per node; one reader per shard fills a missing
snapshot): 10 nodes 5/5, median 2.51 s; 100 nodes 5/5 (36.4, 48.9, 67.6, 63.3, 63.2 s),
median 63.2 s, 2,759 connections open at the end, ratio 25.1. Not a regression of that
change: the code before it gave a 59.9 s median in a direct run an hour later (37.3 s with
it an hour before), per-operation costs (`netcost`) unchanged. Runs on this shared
machine vary up to ~1.7x for the same code; compare only runs made side by side.

Later on 2026-12-06 (load 0.4 before, 2.8 after), with proposals and votes sent to the
attempt's members only (the certificate and the proposal it certifies still gossiped), an
author pushing its update to the members it is connected to (at least 2) while members pull
from each other what went to the others, a node off the committee pulling the last round's
updates from a member it is connected to, and no sync rounds on the updates topic (nothing
is gossiped there): 10 nodes 5/5, median 2.77 s (train 1.8, disseminate 0.3, agree 0.2);
100 nodes 5/5 (13.5, 20.7, 29.1, 22.7, 23.8 s), median **22.7 s** (train 6.4, disseminate
14.2, aggregate 0.4, agree 0.8, commit 0.3), all 100 updates in every round, accuracy
0.771, 1,734 connections open at the end (2,759 before), shards at 0.77-0.79 of a core:
ratio 8.2 (target <= 2). Direct runs the same hour, one change at a time: 37.1 s median
before (agree 6.8 s), 30.0 s with proposals and votes to the committee (agree 2.0 s), 28.9
s with the members' relay (connections 2,765 -> 1,825); 10-node runs side by side, before
and after: 2.6 / 2.6 s and 2.6 / 2.1 s. py-spy of both shards in rounds 2-4: yamux frame
reads 18% (the ~285 MB of deltas a round: each member takes in all 100), block exchange
7.5% (members fetching relayed deltas, followers the model), connection set-up ~7%,
training 7%, stream negotiation 3%, sync 3.7%, pubsub 2.7% (5.2% before), the last
round's pulls 2.4%. What is left is dissemination (14 s at the median): a member takes in
100 deltas, ~60 of them fetched from another member, through Python's Noise and yamux;
in a direct run of this code half an hour after the bench (median 30.1 s: runs vary
~±30%), every update was out 8-13 s into a round and the members held them all 5-32 s
after the last.

Later on 2026-12-06, a new session (the machine slower than that morning: the code above
gave 33.2 s then). A trio Instrument timing every task step and counters on yamux frames, streams,
pubsub RPCs and dials in both shards found, per round (rounds 2-5): ~1,900 block streams
for ~470 blobs (every fetch opened a stream to 4 providers, dialling those it was not
connected to), ~65 dials by py-libp2p's AutoConnector (it dials every peerstore peer while
a node has < 200 connections), ~3,600 yamux RTT pings, a re-draw's re-wraps pushed to
every new member (~450 dials in that round), 5,000 registry reads per shard before round 1
(nodes whose rounds start together all missed the same shared reads) and 9% of a shard's
loop in `recv` (a 256 KiB read is an mmap + munmap under the shards' malloc settings).
All fixed (lazy block providers, our own top-up to 12 connections, pings every 600 s,
re-wraps relayed like updates, reads one node at a time, 120 KiB reads). Direct runs side
by side, 100 nodes: before 28.8, 33.2, 48.4, 35.4, 30.6 s (median 33.2); after 25.4, 28.0,
23.5, 29.3, 24.1 s (median **25.4 s**; the re-draw round 48.4 -> 23.5 s). Per node: the
median node starts a round 2.6-3.4 s after the first (3.7-5.0 before), has its update out
5 s in (7 before); the members close collection 20-26 s in (28-45 before), 12-14 s after
the last update went out -- the relay among members is what is left. The bench the same
hour: 10 nodes median 3.44 s, 100 nodes 28.8 s, ratio 8.4 (target <= 2, not met).
Then the members' relay pulls carried the deltas (`pull+`, network.md): block fetches of
relayed deltas 1,866 -> 13 over the 5 rounds (3,353 deltas attached), but the rounds of a
direct run were no faster (19.0, 23.9, 25.9, 27.2, 27.5 s, median 25.9 s; one round closed
at the quorum with 93 of the 100 updates): the fetches' streams were not what held the
relay up. Not found yet: what the members spend the 12-14 s after the last update on.
The bench at the session's head (load 0.5 before, 2.0 after): 10 nodes 5/5, median 2.19 s
(train 1.3, disseminate 0.4, agree 0.2), accuracy 0.817; 100 nodes 5/5 (33.2, 16.0, 20.4,
20.3, 17.6 s), median **20.3 s** (train 5.4, disseminate 12.3, aggregate 0.5, agree 1.3,
commit 0.4), accuracy 0.771, 1,348 connections at the end, shards at 0.76 of a core:
ratio 9.3 (target <= 2, not met; the 10-node run was fast this time).

Later on 2026-12-06, a third session. Counters of each admission by path, the durations of
pulls, pushes and stream opens, and the event loop's lag (measurement only, in both shards)
found, per round: members' relay pulls brought every earlier round's updates another
member still held, oldest first and with their deltas (a member kept what it was pushed for
600 s; an answer stops at 8 MiB, so the current round's waited behind ~1,000 stale ones a
round, 2,571 rejected as stale in a run and as many accepted as late); pull answers and
pushes crawled at yamux's 256 KiB window (one round trip through two loaded loops per 128
KiB); an open on an existing connection took ~0.8 s at the median; the updates topic kept a
gossipsub mesh with nothing on it; followers checked a committed round's 100 signatures in
one loop step (~35 ms; 105-144 such steps per shard a run). Fixed: a pull names the round it
wants (`since`, network.md §3) and a tick's two pulls run in turn; streams that bring
attachments get a 16 MiB window; the multistream header and the proposal go out in one write
(`multiselect_tuning`; opens measured no faster: ~0.2 s of one is in py-libp2p's
`Swarm.new_stream`, the rest waiting on the peer's loop); the updates topic is not joined on
gossipsub when updates go to the committee; pulled signatures checked ten per loop step. The
relay after the last push went from 8-9 s to 4-5 s. Direct runs side by side, before
(6bd1aab) / after the first four: 30.7, 15.8, 19.3, 18.7, 13.2 / 18.0, 16.3, 15.2, 20.4, 18.1 s
and 28.9, 22.9, 20.0, 23.2, 24.7 / 19.7, 13.0, 15.2, 15.7, 17.1 s (medians 18.7 -> 18.0 and
23.2 -> 15.7 s; round 1 ~30 -> ~19 s). The loops' lag (a 50 ms sleep's overshoot) was 7 ms
at the median, ~80 ms at p90 and ~250 ms at p99 over a run, under 30 ms at the median in
rounds 2-5: a busy loop is not all of an open's time. Two more changes looked worse and were
taken back: a member's first pull of an attempt sent to every other member at once (to open
connections early) together with the signature checks in a worker thread (GIL contention):
23.3 and 28.6 s medians against 18.5 and 20.8 s for the code before them in alternating runs
(and the machine drifts: that code gave 15.7-26.6 s medians over the hour; the final head
20.5 and 25.6 s against 26.6 and 18.5 s for it, alternating). The bench at the head (load
0.25 before, 2.4 after; the 10-node run 3.1 s against 2.2 s that morning): 10 nodes 5/5,
median 3.13 s (train 1.9, disseminate 0.6, agree 0.3), accuracy 0.817; 100 nodes 5/5 (33.0,
19.5, 18.6, 22.2, 24.2 s), median **22.2 s** (train 7.5, disseminate 10.9, aggregate 0.5,
agree 1.2, commit 0.6), accuracy 0.771, 1,347 connections at the end, shards at 0.79 of a
core: **ratio 7.1** (target <= 2, not met; 7.1 also with the thread variant an hour earlier:
2.93 / 20.96 s).

2026-12-06, a fourth session. Measured in instrumented runs (`Gossip` pulls, pushes and
opens timed, both ends of an open split: the responder's spawn and negotiation): (1) half of
the deltas a member's relay pulls brought (2,481 of 4,853 in a run, ~1.5 GB) it already held
when they arrived: a pull asked for in the middle of the pushes took 10-12 s and the authors'
pushes overtook it; (2) an open's time was mostly schedule points: trio's `Lock.acquire`
passes one even when the lock is free, a stream read takes three (state, connection and
window locks) and multistream reads a varint a byte at a time, so the listener's
negotiation alone took 0.4 s at the median on a loop where each waits for every other
runnable task; (3) every stream open and close, on both ends, started a task per notifee
whose handler does nothing. Fixed: a member relays once no update was pushed to it for 1 s
(else every 5 s), each relay pull bounded to 10 s; buffered stream bytes read without locks
and free locks taken without a schedule point (`yamux_tuning` fix 7); stream notifications
inline, the library's no-ops skipped (`notify_tuning`); status.json written from a thread.
Instrumented runs, in order (rounds 1-5): 41.9, 20.3, 21.3, 20.7, 20.5 s before; 23.5, 15.3,
19.8, 17.0, 16.1 with the relay change (redundant relayed deltas 51% -> 5%, pulls 1.15 ->
0.20 s median, p90 11.2 -> 3.4 s); 11.8, 12.4, 13.7, 13.0, 13.0 with the stream fixes
(opens 1.40 -> 0.23 s median, p90 7.2 -> 2.0 s; negotiation 0.28 -> 0.07 s; pushes 4.3 ->
0.7 s). Tried and taken back: writing 16 frames in one socket write (direct runs side by
side: 13.4, 13.3, 16.9, 15.9, 14.7 s against 10.1, 13.2, 15.6, 12.9, 14.9 s without, and it
holds the connection's write lock through long sends while the muxer's reader writes
control frames under it), and relay pulls from every other member once the pushes are quiet
(no faster, more empty pulls). The 10-node round got faster too (the same fixes): the bench
at the head (load 0.18 before, 1.78 after): 10 nodes 2.09, 2.06, 2.62, 2.07, 2.24 s, median
**2.09 s** (an hour earlier 1.63 s); 100 nodes 17.9, 16.9, 17.3, 16.6, 15.8 s, median
**16.9 s** (train 6.5, disseminate 6.6, aggregate 0.4, agree 1.2, commit 0.6; a direct run
of the same code 20 minutes earlier: 13.2 s), all 100 updates in every round, accuracy
0.771, 1,347 connections, shards at 0.76 of a core: **ratio 8.1** (target <= 2, not met).
Per round at 100 nodes (a direct run): 1.4-1.8 s from the commit to a node's round start
(model fetch, chain), 1.5-2 s more to its update (training takes turns on a shard's core:
~45 ms a node), then the pushes end ~2 s later and the relay ~3 s after that.

2026-12-06, a fifth session. A py-spy profile of both shards at 100 nodes: keccak ~8% of the
loops (eth-hash's default pycryptodome backend, ~15 us a call: every signature check hashes
three or four times, every committee draw once per staked node), each node's check of a
committed round's 100 pulled signatures 11-16% (a shard's 50 nodes check the same 100
signatures), gossipsub 16% (a heartbeat a second per node: mesh upkeep, peer scores, their
RPCs). And instrumented runs: a member's first relay pull of a round went out before any
update was pushed to it (the 1 s quiet rule read the authors' training as the end of the
pushes), met the push storm at the other member (6.9 s at the median) and held the relay
that long. Fixed: keccak on eth-hash's pysha3 backend (~5 us) and signatures through
libsecp256k1 directly (recovery 94 -> 60 us, the same bytes as eth-keys); a signer
recovered once per (digest, signature) per process (the round pulls' share 11-16% -> 2.4-
3.6%); the relay's clock starts at the round's first push to the member (10 s into the
round with none), a tick that brought updates followed by the next at once; the sim's
gossipsub heartbeat 1 s up to 20 nodes, 5 s at 100 (`sim.run.gossip_heartbeat_s`). Direct
100-node runs alternating with the session's starting code (2838adf), same hour: medians
18.0 and 16.3 s against 22.4 and 20.5 s (rounds 18.0, 16.6, 19.5, 20.1, 16.4 / 23.1, 13.0,
14.1, 16.3, 16.5 against 22.0, 19.1, 23.4, 23.2, 22.4 / 16.9, 20.5, 23.2, 22.9, 17.0): ~20%
faster. The bench at the head (the machine slower than the session before: load 0.99
before, 2.69 after): 10 nodes 2.66, 3.11, 2.99, 2.76, 2.58 s, median **2.76 s** (2.09 s a
session ago); 100 nodes 27.2, 22.2, 23.9, 22.2, 19.7 s, median **22.2 s** (train 9.9,
disseminate 8.2, aggregate 0.8, agree 1.7, commit 0.8), all 100 updates in every round,
accuracy 0.771, shards at 0.77 of a core: **ratio 8.0** (target <= 2, not met). Tried and
not kept: a 1 ms GIL switch interval in the shard processes (training threads wait on the
loop's GIL: 600 images take 13.5 ms alone, ~60 ms in a shard), no faster side by side
(medians 20.1, 18.0 s with it against 18.5, 17.4 s without). What the round is made of at
100 nodes on 2 cores: ~800 delta transfers (each member takes in all 100, each node fetches
the model) at ~6 ms of CPU each through py-libp2p, 100 trainings that take turns with the
loop for the GIL, seven members each running the robust filter over 100 deltas (~0.17 s
each alone), against 70 transfers and 10 trainings for the 10-node round.

2026-12-06, a sixth session. Each shard now trains its nodes in a training process of its
own (`sim.shard_proc`: forked before the loop starts, `train_local` on the node's partition
file, the delta bitwise that of a training in the node): in threads, a node's training
waited on the loop for the interpreter lock (~60 ms for 600 images against 13.5 ms alone)
and its Python work held the loop up. In the runs' metrics (rounds 2-5, side by side): a
node's round start to its update out 2.6-3.4 s -> 1.0-2.7 s at the median, the "train"
phase ~9 -> ~6 s.
Direct 100-node runs alternating with the session's starting code: medians 19.6, 22.8 s
against 39.4, 22.6 s (the first base run met a slow spell of the machine). The bench at
that code (load 0.78 before, 2.53 after): 10 nodes 2.55, 2.64, 2.63, 3.24, 2.60 s, median
**2.63 s**, accuracy 0.817; 100 nodes 17.6, 17.8, 18.1, 20.7, 16.3 s, median **17.8 s**
(train 5.7, disseminate 7.3, aggregate 0.7, agree 1.7, commit 0.8), all 100 updates in every
round, accuracy 0.771, shard loops at 0.70-0.72 of a core (their training processes apart):
**ratio 6.8** (target <= 2, not met). Where a 100-node round goes now (a trio Instrument
summing each task step's time per task name and half-second, rounds 2-5): the commit is
known everywhere within ~0.5 s, but the median node holds the new model 2.1-2.7 s later (93
fetches of 400 KB from the 7 members while both loops are ~95% busy: certificate and
proposal gossip ~25% of those seconds, yamux frame reads ~23%, model serving ~11%); authors'
pushes arrive at a member over ~8 s (a 400 KB push takes 2.4 s at the median, 5.2 s at p90:
every frame waits its turn on a loop with hundreds of runnable tasks); the member's relay
then pulls the ~60 deltas pushed only to others, 3-4 answers of 8 MiB in turn, ~3 s after
the last push; aggregation, agreement and the commit ~3 s. Over a whole run the loops'
time splits: yamux frame reads 23.5%, answering pushes and pulls 9.3%, pubsub ~14%, the
last round's pulled updates 5.1%, the round machine 4.7%, stream negotiation 5.1%, pushes
4.5%, new connections ~6%. Tried and not kept: the shard loop at niceness 10 so that
trainings go first (medians 15.0 vs 13.1 s without, then both ~2.5x slower as the host's
steal time reached ~30%: no evidence either way, and a loop starved by any local load).

2026-12-07, a seventh session: background work trimmed, found with py-spy on both shards
(sampling, rounds 2-5; shares of the shards' event-loop samples). A follower sharing its
shard's chain reads went to a worker thread for every 0.5 s poll (100 hops a second, with
the thread starts ~4%): it now reads the cached head on the loop and hops only when the
head is stale or shows a new block. The ticker woke every node 4 times a second in every
phase (~2%): it now wakes at the machine's deadlines, every 0.25 s while collecting, 2 s
otherwise, with a Tick before any event that finds the machine's clock 0.25 s old (as
`sim.des.node` models it). Answer buffers: 32 kept instead of 8 (a round start's model
fetches allocated a 3 MiB buffer per stream, 2.2%). Status writes at 10 a second machine-wide
(2.4%), gossipsub mesh degree 3 above 30 nodes (`sim.run.gossip_degree`; 6 below). Direct
runs alternating with the session's starting code (follower, degree and status changes):
median rounds 35.0 (a test suite ran beside it), 24.4, 17.8 s against 25.9, 22.2, 18.2 s,
the shards' CPU over a run 213, 207, 193 s against 239, 223, 198 s: ~7% less CPU, no
wall-clock gain that the machine's noise would not hide (the degree alone, before: 28.2, 28.5
s against 31.7, 34.4 s). The bench at the session's head (load 0.34 before, 2.13 after;
host steal ~5%): 10 nodes 2.53, 2.68, 2.65, 2.64, 2.59 s, median **2.64 s**, accuracy
0.817; 100 nodes 19.5, 16.1, 17.3, 17.3, 16.6 s, median **17.3 s** (train 5.8, disseminate
8.0, aggregate 0.9, agree 1.3, commit 0.4), all 100 updates in every round, accuracy 0.771,
shard loops at 0.66-0.67 of a core: **ratio 6.5** (target <= 2, not met). What a 100-node
round's loop time is made of (py-spy, before these changes): yamux frame reads 20%, inbound
streams 22% (pubsub reads 4.6, push/pull/sync answers 8.7, block answers 3.0, negotiation
2.8), libp2p's service tasks 6.6, the last round's pulled updates 5.2, anti-entropy syncs
4.6, socket send/recv system calls 12% of all samples: per-exchange costs (~10 frames and
their Noise messages for a stream's open, request, answer and close) across ~300 pushes,
~80 relay pulls, ~93 round pulls, ~200 sync exchanges and ~150 block streams a round.
Tried and not kept: four shard processes on the two cores (the loops of two are ~1/3 idle):
medians 17.5, 20.0 s and 188, 200 CPU-s a run against 16.1, 17.6 s and 168, 168 CPU-s with
two, alternating runs (`P2PFL_SCALE100_SHARDS` sets it).

2026-12-07, an eighth session: a quiet machine (load 0.4-1.1 before the runs) and each
member's relay traced (every update it admitted, pushed or pulled, and every relay pull's
start, end and yield, against the round log's timeline). In a 100-node round the last
update goes out 3.5-4.6 s after the previous commit, the last push reaches the members
~1.5 s later, their first relay pulls start 1.1-2.4 s after that (the relay waited for a
quiet second, then for its next 1 s tick) and four or five 8 MiB answers in turn (0.3-1 s
each, ~20 deltas) bring the ~70 updates pushed to the others. Quiet spell and tick are now
0.4 s: alternating direct runs, median rounds 15.0 / 12.3, 11.9 / 10.5, 11.8 / 10.4,
11.9 / 12.3 s (1 s / 0.4 s). Two costs are the protocol's, not the code's: the sortition's
committee sizes (5, 7, 11, 9, 7 in rounds 1-5 of this scenario; every member takes in all
100 deltas, so an 11-member round moves 57% more than a 7-member one: 10.4-12.3 s against
8.8-9.9 s), and round 5's first draw, below quorum (4 members) in both runs, which holds
every update until the re-draw `small_redraw_delay_s` (5 s) after the round start (the
10-node run's round 5: 5.6 s against ~1.5 s; the 100-node run's ~13 s against ~9-11 s).
Every node knows such a draw is small the moment it draws it; the wait exists for the
contract's `attempt x redrawDelay` bound, which only the commit, not the round's work,
would need to respect. Tried and taken back (674681c, reverted): each update sent at once
to the next draw that reaches quorum; alternating direct runs an hour later, on a slower
machine, gave medians 14.7 and 16.6 s against 15.4 and 16.3 s (round 5: 14.4, 17.0 against
18.5, 15.8 s): the new members still start their relay when their attempt starts, so only
the pushes (~1.5 s) move earlier, which this machine's noise hides. The bench at the
session's head (load 1.1 before, 2.6 after): 10 nodes 1.69, 1.55, 1.54, 1.52, 5.56 s, median
**1.55 s**, accuracy 0.823; 100 nodes 8.3, 9.0, 10.7, 13.2, 15.2 s, median **10.7 s** (train
3.3, disseminate 4.4, aggregate 0.6, agree 1.0, commit 0.3), all 100 updates in every round,
accuracy 0.771, shard loops at 0.58-0.66 of a core: **ratio 6.9** (target <= 2, not met; the
100-node median fell 17.3 -> 10.7 s since the last bench, the 10-node one 2.64 -> 1.55 s on
the quieter machine).

2026-12-07, a ninth session: three changes measured in alternating direct 100-node runs, none
faster. (1) Members forwarding by push (9f88c37, reverted): an author asked each member it
pushed to to push the update on to a share of the others (`push+`, a forward list), so that
every member held it two pushes after it went out instead of after the relay's quiet spell
and pulls. Medians 18.2 and 25.1 s against 13.8 and 14.6 s for the code before, the
dissemination phase 7.8-14.5 s against 5.0-9.1 s, and three rounds stalled 70-100 s in
agreement (members closing collection on different sets): ~70 forward pushes per member a
round, one stream each, cost more on the loaded loops than the relay's four or five 8 MiB
answers. (2) The relay's cadence while pushes still arrive, 5 s -> 1.5 s: medians 11.4,
12.4 s against 11.5, 13.0 s, within the noise; not kept. (3) Deltas rounded to float16 with
error feedback and sent packed (`[train] delta_float16`, kept as a task option: 1.6x faster
rounds on 20 Mbit/s links, `python -m sim.bench float16`): here ~35% fewer bytes a round
(88 against 140 MB sent) but medians 12.8, 14.5 s against 10.9, 12.6 s. The runs also showed
what confounds such comparisons: the draws follow the model's digest, so a change to the
deltas changes every committee (14, 8, 11, 9, 6 members against 5, 7, 11, 9, 7), and round
time follows the committee's size (each member takes in all 100 deltas). At 100 nodes the
threshold sortition's committee size is Poisson-binomial around k = 7 (standard deviation
~2.5: 5-14 members seen), at 10 nodes binomial(10, 0.7) (~1.4); 16% of draws at 100 nodes
are below the quorum of 5 (each costing `small_redraw_delay_s`, 5 s) against ~5% at 10. An
MLP of 32 hidden units (4x fewer bytes everywhere, model fetches and aggregation included)
gave medians 7.4 and 11.1 s against 16.0 and 16.9 s for 128, alternating (committees 8, 7,
10, 6, 6 against 5, 7, 11, 9, 7): the round's cost grows with the model as well as with the
number of messages, but halving only the deltas' bytes did not show. (4) Relay answers of
32 MiB instead of 8 (the same draws: the code does not touch the deltas): medians 11.1, 11.0
s against 13.3, 11.7 s, ~5% of the summed rounds, within the noise, and an answer is built
whole in memory (the footprint target is 400 MiB a node): not kept. The session's kept
changes for this run are two liveness fixes found through a flaky test (a 5-node round
committed 2-3 of 5 updates): a member's next-round history includes the committed
proposal's authors, and a member relays at every tick while it votes. The bench at the
session's head (load 0.34 before, 1.73 after): 10 nodes 1.26, 2.03, 1.55, 1.53, 5.57 s,
median **1.55 s**, accuracy 0.823; 100 nodes 9.6, 10.5, 12.5, 11.5, 11.9 s, median
**11.5 s** (train 3.5, disseminate 5.4, aggregate 0.4, agree 0.9, commit 0.4), all 5
committed, accuracy 0.771, shard loops at 0.53-0.59 of a core: **ratio 7.5** (target <= 2,
not met).

2026-12-07, a tenth session: where the CPU goes, and why <= 2x is out of reach here. A trio
Instrument in both shards (time in task steps per task name and quarter second; a
measurement hack, not kept) showed both loops ~95% busy from each commit to ~5.5 s into the
round and 70-90% over rounds 2-4, the busier shard (the one holding more members) saturated
through the relay; shard user + system CPU plus the training processes came to ~21 core-s a
round at 100 nodes against ~2.5 at 10 (8.4x the work for 10x the nodes); `sim.bench
netcost` now gives 3.3 ms a 407 KB push and 3.0 ms a model fetch (both ends; 6.8 and 6.1
a session ago), so a round's essential work (each update pushed to each member, the model
fetched by each node, 60,000 images trained) is 3.9 core-s at 100 nodes against 1.57 at 10:
its own ratio is 2.5, above the target, before any overhead. py-spy `--gil` samples (the
interpreter lock is what a shard's threads share), rounds 2-4: yamux frame reads 11.6%,
answering pushes and pulls 8.8% (a third of it copying each 400 KB delta three times into
an 8 MiB pull answer: now joined once), the last round's pulls 5.5% and the files they
complete 2.5% (the EIP-55 spelling of every contributor in each node's reward file, 1.6%:
now cached), member-side delta opening 4.3% (`np.isin` in the tensor header's nesting
check, 1.5%: now a table lookup), pushes 3.2%, fetch tasks 3.2%, aggregation 2.6%, new
connections ~4.5%: per-message work spread thin, as before. Tried and not kept: 16 yamux
frames per socket write (16% less CPU a MB between two idle hosts, 4.30 -> 3.61 ms, but the
100-node pulls' answer times unchanged: 0.49 s for a ~5.7 MB answer at the median, 0.24 s of
it reading at ~22 MB/s on the loaded loop). Found and fixed on the way (counters of the
100-node run): ~1 node in 5 a round learned of a commit (certificate, chain) before the
gossiped proposal and settled nothing -- no reward file, no round record, a hole in its
probation history (106 and 116 such counts in a run); such a node now waits for the
proposal, pulls it from the committing members if need be (107 waits, 4 pulls a run) and
settles then. The bench at the session's head (load 1.9 before, 1.9 after): 10 nodes 1.66,
1.54, 1.55, 1.78, 5.84 s, median **1.66 s**, accuracy 0.823; 100 nodes 9.3, 9.5, 13.2, 13.6,
12.3 s, median **12.3 s** (train 4.3, disseminate 5.5, aggregate 0.4, agree 0.8, commit
0.4), all 5 committed, accuracy 0.771: **ratio 7.4** (target <= 2, not met). With every
member taking in every delta, the target needs the 100-node round's ~21 core-s cut to ~6
(the essential 3.9 plus what the 10-node round spends beyond its own); what could change
that is the protocol's shape -- members that each verify only a share of every delta (e.g.
coordinate stripes aligned with `det_sum`'s lanes, so that partial sums stay exact, each
stripe checked by more than one member) -- not the code's speed.

2026-12-07, an eleventh session: the same comparison on Flower's LeNet-5 and training
(`sim.bench scale100_lenet`), where a node's training is a larger share of its round: direct
runs 8.7 s (10 nodes) and 16.3 s (100) at the median, ratio 1.87; the bench 7.4 / 17.4 s,
ratio 2.35. Those runs showed each training taking 2-2.5x its time alone in a shard's
training process: forked from the shard, it ran under the node's malloc settings (a fixed
128 KiB mmap threshold, for the node's footprint), so every batch's activation buffers were
mapped and zero-filled anew and the heap's free top given back. With settings of its
own (`sim.node_proc.tune_malloc_for_training`; the deltas bit for bit the same) LeNet-5 on
6,000 images takes 0.55-0.7 s instead of 1.3-1.4 s, and the LeNet bench gave 4.62 / 13.9 s:
ratio 3.0 -- the shorter training helped the 10-node round (-37%) more than the 100-node one
(-20%). The bench at the session's head (load 1.0 before, 2.0 after): 10 nodes 1.60, 1.52,
2.03, 1.42, 6.07 s, median **1.60 s**, accuracy 0.823; 100 nodes 10.2, 10.5, 16.9, 13.5,
14.0 s, median **13.5 s** (train 4.0, disseminate 6.2, aggregate 0.5, agree 1.4, commit 0.5),
all 5 committed, accuracy 0.771: **ratio 8.4** (target <= 2, not met; the MLP's training is
~14 ms a node, so its round is nearly all protocol work).

2026-12-07, a twelfth session: the bench now prints the CPU a round and the loops' share of it
a node-round (the protocol's cost, training apart), both over the run from the start to the
last commit. At the head (load 0.16 before, 1.95 after): 10 nodes median **1.55 s**, 2.50
core-s a round, 142 ms of loop CPU a node-round; 100 nodes 13.3 s at the median (train 3.6,
disseminate 6.8, aggregate 0.4, agree 0.6, commit 0.4), **25.1 core-s a round**, 228 ms a
node-round: the ratios 8.6 (median rounds), **10.0 (CPU a round)** and 1.6 (the protocol's CPU
a node-round). The same data costs ten times the CPU spread over ten times the nodes, each
node's share of the protocol growing 1.6x; on two saturated cores the rounds' ratio follows
the CPU's. A run a few minutes earlier: 1.63 / 13.2 s, ratio 8.1. The same comparison
deployed, each node with its own CPU and link (`sim.bench scale100_des`, the discrete-event
simulator): ratio 8.2 at 20 Mbit/s a node, 4.5 at 100, 1.65 at 1 Gbit/s -- every member
takes in all 100 deltas, 40 MB a round, so <= 2 holds only where a member's link moves that
in well under a second; on two shared cores Python's networking is that link.

2026-12-07, a thirteenth session: are the bytes what scales? `sim.bench scale100_linear` runs
this comparison with a linear model (7,850 parameters: 31 KB deltas and models against 407
KB, 13x fewer bytes a round; everything else the same). Side by side, the same hour (load
1.3 before the first, 3.0 after the second): the MLP here gave 10 nodes 1.55 s and 2.97
core-s a round, 100 nodes 13.9 s and 27.4 core-s, ratio 9.0; the linear model 10 nodes 1.03
s and 1.73 core-s, 100 nodes **7.94 s and 21.5 core-s** (204 ms of the loops a node-round),
ratio 7.7 (a direct run of it before: 1.11 / 10.45 s, 19.3 core-s). With the deltas' bytes
nearly gone the 100-node round keeps ~80% of its CPU: its 100-node median is still 5.1x
the MLP's 10-node one. So no change to what a delta costs to move -- members each taking in
a share of every delta, float16 or 8-bit deltas -- can bring the MLP's ratio to 2 on this
machine; what a 100-node round costs here is each node's per-message work, 100 times over
(the direct run's counters, a node-round on average: ~50 messages accepted -- heartbeats 20,
updates 9, relayed deltas 9, pushes 4, re-wraps 4 --, each a gossip or stream exchange
through Noise and yamux on a loop shared by 50 nodes). py-spy of both shards in a linear
run (rounds 2-5, idle threads apart): yamux frame reads 12.7%, inbound streams (negotiation
and handlers) 8.5%, the last round's pulled updates and the files they complete 10%,
aggregation in threads 2.8%, the rest under 3% each.
The same runs showed a cost of the protocol's own: 3 of the linear run's 5 rounds began with
a draw below quorum (threshold sortition at 100 nodes: ~16% of draws, against ~5% at 10),
and every update then waited `small_redraw_delay_s` for the re-draw (out 3.7-4.3 s into the
round against 0.4-0.8 s), though every node knows such a draw is small the moment it draws
it. Now such a draw is left at once (the first 8 attempts of a round), the round opens at
the first draw that reaches quorum and only its commit waits for the contract's attempt x
redrawDelay bound (round.md "Timers / attempt"; sealed updates wrap for that opening
committee). Direct runs of the linear scenario under another name (`python -m sim
sim/scenarios/scale100_linear.toml --shards 2 --set name=scale100tiny`: the same draws in
both, committees 10, 8, 14, 6, 5, the first draws of rounds 2, 4 and 5 small), before /
after: rounds 8.2, 10.4, 9.6, 11.0, 10.6 s and 10.2, 9.6, 8.1, 11.9, 10.6 s (medians 10.4
and 10.2) against 8.3, 6.5, 7.4, 7.5, 6.7 s and 6.4, 6.4, 6.6, 7.2, 6.5 s (medians **7.4 and 6.5**);
updates out 0.2-0.5 s into every round. At 10 nodes a small draw's round still waits for
the chain's bound (the MLP's round 5: 6.4 s against 5.7-6.1 s before, the 1 s margin for
whole-second block timestamps). The benches at the head (load 0.3 before, 2.9 after the
first; 2.9 before, 2.2 after the second): MLP 10 nodes 1.67 s, 100 nodes 9.1, 12.2, 18.0,
16.7, 14.65 s, median **14.65 s** (train 4.4, disseminate 7.7, agree 1.3), 32.1 core-s a
round, ratio 8.8 (target <= 2, not met; 13.9 s and ratio 9.0 before the change an hour
earlier: the MLP scenario's draws are mostly full, and runs vary ~±20% here); linear 1.28 /
**6.90 s**, 20.5 core-s a round, ratio 5.4 (1.03 / 7.94 s, ratio 7.7 before).

2026-12-07, a fourteenth session: why <= 2 is out of reach on this machine, in the bench's
own figures. The CPU figures now leave start-up and round 1 out (a mark at the first commit:
`steady_*` in the run's summary); the figures above included them, and round 1 (connections,
every node's first model) was a third of the MLP's and over half of the linear run's CPU.
Over rounds 2-5 a node costs the loops about the same at both sizes -- 125 ms a round at 10
nodes, 196 ms at 100 (MLP; linear 66 and 84 ms) -- so a round at 100 nodes is ~10x the CPU
of one at 10 (22.3 against 2.3 core-s, linear 9.1 against 1.15), on two cores that the
100-node run keeps ~88% busy while the 10-node run, at ~2 s a round, uses a third of them.
The new figure `ratio-if-per-node-cost-held` gives the ratio the medians would have if each
of the 100 nodes cost exactly what one of the 10 does (10x the 10-node loops' CPU a round
plus its training, over the cores, / the 10-node median): **3.35** (MLP) and **3.47**
(linear). So no protocol whose cost a node does not grow with the node count reaches 2 here;
it would need a node's round to cost 1.7x less than it does at 10 nodes, where py-spy of
both shards over rounds 2-5 (`sim.bench scale100_profile`: each sample put down to its
innermost frame in a known package) puts **59-63% of the loops in the network stack** --
py-libp2p, trio, Noise, protobuf, our patches of them -- and 35-40% in our own code, at 10
and at 100 nodes alike: with all of our own code free, the held-cost ratio would still be
~2.2 (10 x 0.78 core-s of stack a round plus 1.05 of training, on 2 cores, / 2.02 s), and
more, as the 10-node round would shorten too. In that bench's terms the target leaves the
loops ~44 ms a node-round at 100 nodes; the stack alone takes 127 ms there, 87 ms at 10
nodes. The bench at the session's head (load 0.65 before, 2.7 after): 10 nodes 1.25, 2.02,
1.53, 2.03, 6.08 s (round 5 a draw below quorum, which at 10 nodes waits for the chain's
bound), median **2.02 s**, 2.30 core-s a round, accuracy 0.823; 100 nodes 12.35, 10.84,
12.86, 15.21, 13.15 s, median **12.86 s** (train 4.2, disseminate 5.8, aggregate 0.4, agree
0.7, commit 0.4), 22.3 core-s a round, accuracy 0.771: **ratio 6.4** (target <= 2, not met),
CPU a round 9.7x, the loops' CPU a node-round 1.57x. `sim.bench scale100_linear` beside it
(load 1.0 before, 1.5 after): 1.02 / 5.56 s, ratio 5.5, CPU 1.15 / 9.1 core-s a round
(7.9x), a node-round 66 / 84 ms (1.28x), held-cost ratio 3.47.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sim.bench import ROOT_DIR, BenchError, figure

SCENARIO = ROOT_DIR / "sim" / "scenarios" / "scale100.toml"
ROUNDS_ENV = "P2PFL_SCALE100_ROUNDS"
SHARDS_ENV = "P2PFL_SCALE100_SHARDS"
# The node counts compared: the same total data over 10x more nodes.
NODE_COUNTS = (10, 100)
# Shard processes: one per core of this machine.
DEFAULT_SHARDS = 2
# The acceptance bound of issue #13 item 5 on the median rounds' ratio.
TARGET_RATIO = 2.0
# The cores the shards share (the simulation's whole budget).
CORES = os.cpu_count() or 1


def ratio_if_per_node_cost_held(small_cpu: tuple[float, float], small_median_s: float) -> float:
    """The 100-node / 10-node median rounds' ratio on `CORES` saturated cores if each node
    of the 100 cost the loops what one of the 10 does (`small_cpu`: the 10-node run's CPU a
    round, all and the loops', `_round_cpu`) and the same images cost what they cost there:
    the 100-node round's CPU over the cores, / the 10-node median round."""
    total, loops = small_cpu
    grown = NODE_COUNTS[1] / NODE_COUNTS[0]
    return (grown * loops + (total - loops)) / CORES / small_median_s


def _run(
    prefix: str,
    path: Path,
    nodes: int,
    shards: int,
    on_first_commit: Callable[[list[int]], None] | None = None,
) -> dict[str, Any]:
    """One run of scenario `path` with `nodes` nodes; its summary, round records, CPU
    figures (`_round_cpu`) and median round (None without rounds). `on_first_commit`:
    `run_processes`'."""
    from sim.processes import run_processes
    from sim.report import PHASES
    from sim.scenario import load_scenario

    overrides: dict[str, Any] = {"nodes": nodes}
    if os.environ.get(ROUNDS_ENV):
        overrides["rounds"] = int(os.environ[ROUNDS_ENV])
    scenario = load_scenario(path, overrides)
    with tempfile.TemporaryDirectory(prefix="p2pfl-scale100-") as runs:
        run_dir = Path(
            run_processes(
                scenario, runs, quiet=True, shards=shards, on_first_commit=on_first_commit
            )
        )
        summary = json.loads((run_dir / "summary.json").read_text())
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
        peers = [_peers(path) for path in sorted(run_dir.glob("node*.status.json"))]
    name = f"{prefix}-n{nodes}"
    for r in records:
        phases = ", ".join(f"{p} {r['phases_s'][p]:.1f}" for p in PHASES)
        figure(f"{name}-round{r['round']}", r["wall_s"], f"s ({phases})")
    figure(
        f"{name}-rounds-committed",
        f"{summary['rounds_committed']}/{summary['rounds_planned']}",
        "rounds" + (" (the run's deadline passed first)" if summary["timed_out"] else ""),
    )
    if peers:
        figure(
            f"{name}-connections",
            sum(peers) // 2,
            f"open at the end (a node's median {statistics.median(peers):g}, most {max(peers)})",
        )
    for p in PHASES:
        values = [r["phases_s"][p] for r in records]
        if values:
            figure(f"{name}-phase-{p}-median", statistics.median(values), "s")
    for shard in summary.get("shards", []):
        if "wall_s" in shard and shard["wall_s"] > 0:
            figure(
                f"{name}-shard{shard['shard']}-cpu",
                shard["user_cpu_s"] / shard["wall_s"],
                f"user CPU s per wall s ({len(shard['nodes'])} nodes; system "
                f"{shard['system_cpu_s'] / shard['wall_s']:.2f}; its training process "
                f"{shard.get('train_user_cpu_s', 0.0) / shard['wall_s']:.2f}; "
                f"wall {shard['wall_s']:.0f} s)",
            )
    cpu = _round_cpu(summary)
    if cpu is not None:
        total, protocol = cpu
        figure(
            f"{name}-cpu-per-round",
            total,
            "core-s (the shards' loops, user + system, and their training processes, over "
            "the rounds after the first)",
        )
        figure(
            f"{name}-protocol-cpu-per-node-round",
            protocol / nodes * 1000,
            "ms (the loops' share, training apart, / nodes)",
        )
    median = statistics.median(r["wall_s"] for r in records) if records else None
    if median is not None:
        figure(f"{name}-accuracy", summary["final_accuracy"], "")
        figure(f"{name}-round-median", median, "s")
    return {"summary": summary, "records": records, "cpu": cpu, "median": median}


def _round_cpu(summary: dict[str, Any]) -> tuple[float, float] | None:
    """CPU seconds a round: all of it (every shard's loop process, user + system, and its
    training process's user time), and the loops' share alone (the protocol: training
    apart); None without the figures. Over the rounds after the first commit when the run
    marked it (`steady_*`: start-up, connections and round 1 apart), else over the run from
    the start to the last commit."""
    shards = [s for s in summary.get("shards", []) if "wall_s" in s]
    rounds = summary["rounds_committed"]
    first = summary.get("steady_from_round")
    steady = first is not None and rounds > first and all("steady_wall_s" in s for s in shards)
    key = "steady_" if steady else ""
    if steady:
        rounds -= first
    if not shards or not rounds:
        return None
    loops = sum(s[f"{key}user_cpu_s"] + s[f"{key}system_cpu_s"] for s in shards)
    training = sum(s.get(f"{key}train_user_cpu_s", 0.0) for s in shards)
    return (loops + training) / rounds, loops / rounds


def _peers(status_path: Path) -> int:
    """The peers a node was connected to at its last status write."""
    return int(json.loads(status_path.read_text())["peers"])


def run() -> None:
    compare("scale100", SCENARIO)


def compare(prefix: str, path: Path) -> None:
    """Scenario `path` with 10 and with 100 nodes; figures named `prefix-...`."""
    shards = int(os.environ.get(SHARDS_ENV) or DEFAULT_SHARDS)
    figure(f"{prefix}-load-before", os.getloadavg()[0], "(1-minute load average, 2 cores)")
    runs = {nodes: _run(prefix, path, nodes, shards) for nodes in NODE_COUNTS}
    figure(f"{prefix}-load-after", os.getloadavg()[0], "(1-minute load average)")
    small, large = (runs[n] for n in NODE_COUNTS)
    if small["median"] and large["median"]:
        figure(
            f"{prefix}-ratio",
            large["median"] / small["median"],
            f"(median round, 100 nodes / 10 nodes; target <= {TARGET_RATIO:g})",
        )
    if small["cpu"] and large["cpu"]:
        figure(
            f"{prefix}-cpu-ratio",
            large["cpu"][0] / small["cpu"][0],
            "(CPU a round, 100 nodes / 10 nodes: on a saturated machine the median rounds' "
            "ratio follows it)",
        )
        small_node, large_node = (got["cpu"][1] / n for got, n in zip((small, large), NODE_COUNTS))
        figure(
            f"{prefix}-protocol-cpu-per-node-ratio",
            large_node / small_node,
            "(the loops' CPU a node-round, training apart, 100 nodes / 10 nodes)",
        )
    if small["median"] and small["cpu"]:
        held = ratio_if_per_node_cost_held(small["cpu"], small["median"])
        figure(
            f"{prefix}-ratio-if-per-node-cost-held",
            held,
            f"(the median rounds' ratio if each of the 100 nodes cost the loops what one of "
            f"the 10 does and the images what they cost the 10, all of it on the machine's "
            f"{CORES} cores: a floor for any protocol whose cost a node does not grow with the "
            f"node count; target <= {TARGET_RATIO:g})",
        )
    short = [
        n
        for n, got in runs.items()
        if got["summary"]["rounds_committed"] < got["summary"]["rounds_planned"]
    ]
    if short:
        raise BenchError(f"not every round committed with {short} nodes")
