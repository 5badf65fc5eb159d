"""fastconv.torch under torch.compile, DistributedDataParallel (gloo, 2 processes) and shared thread pools."""

import copy
import os
import socket
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch", reason="torch not installed (fastconv.torch needs it)")

from torch import nn  # noqa: E402

import fastconv  # noqa: E402
import fastconv.torch as ft  # noqa: E402


def _small_cnn(batch_norm=True):
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 8, 3, padding=1)] + ([nn.BatchNorm2d(8)] if batch_norm else []) + [
        nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.AvgPool2d(2), nn.Conv2d(8, 16, 1),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)]
    return nn.Sequential(*layers)


def test_torch_compile_fullgraph_runs_fastconv_ops_and_matches_eager():
    from torch._inductor.compile_fx import compile_fx

    graphs = []

    def inductor_recording(gm, example_inputs):
        graphs.append(gm)
        return compile_fx(gm, example_inputs)

    eager = ft.convert(_small_cnn())
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, fullgraph=True, backend=inductor_recording)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y_eager, y_compiled = eager(x), compiled(x)
    y_eager.square().sum().backward()
    y_compiled.square().sum().backward()

    assert len(graphs) == 1, "fullgraph: one graph, no breaks"
    called = {str(n.target) for n in graphs[0].graph.nodes if n.op == "call_function"}
    assert {"fastconv.conv2d.default", "fastconv.batch_norm.default", "fastconv.update_running_stats.default",
            "fastconv.max_pool2d.default", "fastconv.linear.default"} <= called, called
    torch.testing.assert_close(y_compiled, y_eager, rtol=1e-5, atol=1e-5)
    for (k, a), b in zip(compiled_model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=k)
    for (k, a), b in zip(compiled_model.state_dict().items(), eager.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)  # the running statistics were updated


def test_torch_compile_fullgraph_of_a_block_whose_conv_bn_pairs_fuse_in_eager_inference():
    from fastconv.torch import models as tm

    torch.manual_seed(0)
    ref = tm.BasicBlock(4, 4)
    with torch.no_grad():
        for bn in (ref.bn1, ref.bn2):
            bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0), bn.weight.uniform_(0.5, 1.5)
    ours = ft.convert(ref)
    assert len(ft.conversion_report(ours).fused) == 2
    compiled = torch.compile(ours, fullgraph=True)  # compiled, each layer runs on its own
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    for train in (False, True):
        ref.train(train), ours.train(train)
        with torch.no_grad():
            expected = ref(x)
            torch.testing.assert_close(compiled(x), expected, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(ours(x), expected, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- DistributedDataParallel

_DDP_WORKER = textwrap.dedent("""
    import os
    import sys
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    import fastconv.torch as ft
    sys.path.insert(0, sys.argv[4])
    from test_torch_integration import _small_cnn, _ddp_data, _train

    rank, world, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    ft.set_num_threads(1)  # two processes on a shared machine: one thread each for both libraries
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model = DDP(ft.convert(_small_cnn(batch_norm=False)))
    x, target = _ddp_data()
    per = x.shape[0] // world
    _train(model, x[rank * per:(rank + 1) * per], target[rank * per:(rank + 1) * per])
    if rank == 0:
        torch.save(model.module.state_dict(), out)
    dist.destroy_process_group()
    # PyTorch's gloo teardown at interpreter exit aborts now and then ("terminate called without
    # an active exception", rank 1, after all the work: 5 of 60 runs of a worker without fastconv),
    # so the worker leaves at once, its output written and its process group destroyed.
    sys.stdout.flush()
    os._exit(0)
""")


def _ddp_data():
    g = torch.Generator().manual_seed(5)
    return torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 4, (8,), generator=g)


def _train(model, x, target, steps=4):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), target).backward()
        opt.step()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_match_one_process_on_the_whole_batch(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("this torch build has no torch.distributed")
    script = tmp_path / "worker.py"
    script.write_text(_DDP_WORKER)
    out = tmp_path / "ddp.pt"
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    here = os.path.dirname(os.path.abspath(__file__))
    procs = [subprocess.Popen([sys.executable, str(script), str(r), "2", str(out), here], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)

    single = ft.convert(_small_cnn(batch_norm=False))
    _train(single, *_ddp_data())
    ddp_state = torch.load(out)
    for k, v in single.state_dict().items():
        torch.testing.assert_close(ddp_state[k], v, rtol=1e-4, atol=1e-5, msg=k)


# --------------------------------------------------------------------------- threads

_THREADS_PROBE = textwrap.dedent("""
    import os, sys
    import torch
    import fastconv, fastconv.torch as ft
    n = int(sys.argv[1])
    ft.set_num_threads(n)
    assert ft.get_num_threads() == {"fastconv": n, "torch": n}, ft.get_num_threads()
    model = ft.convert(torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                                           torch.nn.Conv2d(16, 16, 3), torch.nn.Sigmoid()))
    x = torch.randn(4, 8, 32, 32)
    for _ in range(5):
        model(x).sum().backward()  # fastconv ops and torch ops (ReLU, sigmoid, sum, grad accumulation)
    print(len(os.listdir("/proc/self/task")))
""")


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through Linux's /proc")
@pytest.mark.parametrize("n", [1, 2])
def test_set_num_threads_sets_both_pools_and_they_do_not_multiply(n, tmp_path):
    """Two pools of n threads each, whatever the number of calls: the process holds at most the main
    thread, n - 1 workers per pool and torch's few helper threads (none per call, none per op)."""
    script = tmp_path / "probe.py"
    script.write_text(_THREADS_PROBE)
    out = subprocess.run([sys.executable, str(script), str(n)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    threads = int(out.stdout.split()[-1])
    assert threads <= 1 + 2 * (n - 1) + 2, threads


def test_set_num_threads_validates():
    before = ft.get_num_threads()
    with pytest.raises(TypeError):
        ft.set_num_threads("2")
    assert ft.get_num_threads() == before
    assert before["fastconv"] == fastconv.get_num_threads() and before["torch"] == torch.get_num_threads()

