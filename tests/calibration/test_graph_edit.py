import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgevlm.calibration.graph_edit import drop_unread, float_source, replace_node


def _graph():
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z")]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq"),
        helper.make_node("Relu", ["xd"], ["y"], name="relu"),
    ]
    return helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], inits)


def test_the_float_source_of_a_pair_and_of_anything_else() -> None:
    graph = _graph()
    producer = {out: n for n in graph.node for out in n.output}
    assert float_source("xd", producer) == "x"
    assert float_source("xq", producer) == "xq" and float_source("y", producer) == "y"


def test_unread_pairs_and_their_initializers_go() -> None:
    graph = _graph()
    drop_unread(graph)
    assert [n.name for n in graph.node] == ["q", "dq", "relu"]  # still read: kept
    graph.node[2].input[0] = "x"
    drop_unread(graph)
    assert [n.name for n in graph.node] == ["relu"] and not graph.initializer


def test_replacements_take_the_old_node_s_place() -> None:
    graph = _graph()
    replace_node(graph, graph.node[1], [helper.make_node("Identity", ["xq"], ["a"], name="i1"),
                                        helper.make_node("Identity", ["a"], ["xd"], name="i2")])
    assert [n.name for n in graph.node] == ["q", "i1", "i2", "relu"]
