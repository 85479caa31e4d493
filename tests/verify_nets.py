"""Small networks for the verification tests: hand-made ones and ONNX files written from a Network
(seeded random MLPs are in helpers_nets.py)."""
from __future__ import annotations

import torch

from pacverify.network import Affine, Network, Relu


def sum_threshold_net(threshold: float = 0.9) -> Network:
    """2 inputs, 2 classes: z0 = threshold, z1 = x0 + x1 (through ReLUs), so the class at the origin
    is 0 and it changes exactly where x0 + x1 > threshold."""
    w1 = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]], dtype=torch.float64)
    w2 = torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 0.0]], dtype=torch.float64)
    return Network((Affine(w1, torch.zeros(3, dtype=torch.float64)), Relu(),
                    Affine(w2, torch.tensor([threshold, 0.0], dtype=torch.float64))), (2,))


def network_to_onnx(net: Network, path, *, extra_op: str | None = None) -> None:
    """Write ``net`` as an ONNX graph of Gemm (transB=1) and Relu nodes with a dynamic batch; ``extra_op``
    appends one more unary node of that type (e.g. "Sigmoid", to make an unsupported model)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, current = [], [], "x"
    for i, layer in enumerate(net.layers):
        out = f"h{i}"
        if isinstance(layer, Affine):
            inits += [numpy_helper.from_array(layer.weight.double().numpy().astype("float32"), f"W{i}"),
                      numpy_helper.from_array(layer.bias.double().numpy().astype("float32"), f"b{i}")]
            nodes.append(helper.make_node("Gemm", [current, f"W{i}", f"b{i}"], [out], transB=1))
        else:
            nodes.append(helper.make_node("Relu", [current], [out]))
        current = out
    if extra_op is not None:
        nodes.append(helper.make_node(extra_op, [current], ["extra"]))
        current = "extra"
    graph = helper.make_graph(
        nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", net.in_features])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, ["N", net.out_features])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(path))
