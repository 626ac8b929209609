"""Every message path of the base autograder checks, with the student-facing text asserted."""
import pytest
import torch

from gen3d_course.checks import CheckFailure, check_function, check_gradients_flow


def square(x):
    return x * x


def matrix(g):
    return (torch.randn(3, 4, generator=g),)


def failure(*args, **kwargs) -> str:
    """The message of the CheckFailure that a check raises."""
    check = kwargs.pop("check", check_function)
    with pytest.raises(CheckFailure) as info:
        check(*args, **kwargs)
    return str(info.value)


# --- check_function --------------------------------------------------------------------------


def test_success_prints_one_line_and_returns_true(capsys):
    assert check_function(lambda x: x ** 2, square, matrix, name="square") is True
    assert capsys.readouterr().out == "✔ square: matches the reference on 5 random inputs\n"


def test_within_tolerance_passes(capsys):
    assert check_function(lambda x: x * x + 1e-7, square, matrix, name="square", trials=2)
    assert "on 2 random inputs" in capsys.readouterr().out


def test_not_implemented():
    def stub(x):
        raise NotImplementedError("Question q1: implement this and remove the raise")

    assert failure(stub, square, matrix, name="square") == (
        "square not implemented yet: Question q1: implement this and remove the raise"
    )


def test_not_implemented_without_message():
    def stub(x):
        raise NotImplementedError

    assert failure(stub, square, matrix, name="square") == (
        "square not implemented yet: replace the `raise NotImplementedError` with your code"
    )


def test_student_exception_names_type_line_and_inputs():
    def broken(x):
        y = x + 1
        return y @ torch.ones(5)

    with pytest.raises(CheckFailure) as info:
        check_function(broken, square, matrix, name="square")
    message = str(info.value)
    assert message.startswith("square raised RuntimeError at line ")
    assert ": `return y @ torch.ones(5)`: " in message
    assert message.endswith("\n  called as square(x=Tensor(3, 4) float32)")
    assert info.value.__suppress_context__ and info.value.__cause__ is None


def test_inputs_are_named_after_the_reference_parameters():
    def reference(mu, logvar, *, scale=1.0):
        return mu + logvar * scale

    def inputs(g):
        return {"mu": torch.zeros(2), "logvar": torch.zeros(2, dtype=torch.float64), "scale": 2.0}

    message = failure(lambda mu, logvar, scale: 1 / 0, reference, inputs, name="combine")
    assert message.startswith("combine raised ZeroDivisionError at line ")
    assert message.endswith(
        ": division by zero\n"
        "  called as combine(mu=Tensor(2,) float32, logvar=Tensor(2,) float64, scale=2.0)"
    )


def test_returned_none():
    def forgot_return(x):
        x * x

    assert failure(forgot_return, square, matrix, name="square") == (
        "square returned None; did you forget the `return`?\n"
        "  called as square(x=Tensor(3, 4) float32)"
    )


def test_wrong_type():
    assert failure(lambda x: (x * x).tolist(), square, matrix, name="square") == (
        "square: wrong type: expected a torch.Tensor, got list\n"
        "  on random input 1 of 5: square(x=Tensor(3, 4) float32)"
    )


def test_wrong_shape():
    message = failure(lambda x: (x * x).T, square, matrix, name="square")
    assert message.startswith("square: wrong shape: expected (3, 4), got (4, 3)\n")


def test_wrong_dtype():
    message = failure(lambda x: (x * x).double(), square, matrix, name="square")
    assert message.startswith("square: wrong dtype: expected torch.float32, got torch.float64\n")


def test_nan_in_output():
    message = failure(lambda x: x.sqrt() ** 4, square, matrix, name="square")
    assert message.startswith("square: NaN or inf at ")
    assert "of 12 entries (first at index (0, " in message
    assert "where the reference is finite" in message


def test_values_differ_reports_max_error_and_where():
    def off_by_one_at_1_2(x):
        y = x * x
        y[1, 2] += 1
        return y

    message = failure(off_by_one_at_1_2, square, matrix, name="square")
    assert message.startswith(
        "square: values differ from the reference at 1 of 12 entries; max abs error 1 at index (1, 2): "
    )
    assert "(rtol=0.0001, atol=1e-05)\n  on random input 1 of 5" in message


def test_integer_values_differ():
    message = failure(lambda x: (x > 0).long(), lambda x: (x >= 0).long(),
                      lambda g: (torch.tensor([-1.0, 0.0, 1.0]),), name="sign")
    assert message.startswith(
        "sign: values differ from the reference at 1 of 3 entries; "
        "first at index (1,): expected 1, got 0"
    )


def test_the_failing_trial_is_named():
    calls = []

    def wrong_on_third_call(x):
        calls.append(x)
        return x * x if len(calls) != 3 else x

    message = failure(wrong_on_third_call, square, matrix, name="square")
    assert "\n  on random input 3 of 5: " in message


def test_tuple_outputs():
    def pair(x):
        return x * x, x.T

    assert check_function(lambda x: (x * x, x.T), pair, matrix, name="pair")
    assert failure(lambda x: (x * x, x), pair, matrix, name="pair").startswith(
        "pair: wrong shape in output[1]: expected (4, 3), got (3, 4)"
    )
    assert failure(lambda x: (x * x,), pair, matrix, name="pair").startswith(
        "pair: wrong length: expected 2 values, got 1"
    )
    assert failure(lambda x: x * x, pair, matrix, name="pair").startswith(
        "pair: wrong type: expected a tuple of 2, got Tensor"
    )


def test_dict_outputs():
    def stats(x):
        return {"mean": x.mean(), "max": x.max()}

    assert check_function(lambda x: {"max": x.max(), "mean": x.mean()}, stats, matrix, name="stats")
    assert failure(lambda x: {"mean": x.mean()}, stats, matrix, name="stats").startswith(
        "stats: wrong type: expected a dict with keys ['max', 'mean'], got dict"
    )
    assert failure(lambda x: {"mean": x.mean(), "max": x.min()}, stats, matrix,
                   name="stats").startswith("stats: values differ from the reference in output['max']")


def test_float_outputs():
    def total(x):
        return float((x * x).sum())

    assert check_function(lambda x: float((x ** 2).sum()), total, matrix, name="total")
    assert failure(lambda x: (x * x).sum(), total, matrix, name="total").startswith(
        "total: wrong type: expected a Python number, got a torch.Tensor (use .item())"
    )
    assert failure(lambda x: total(x) + 1, total, matrix, name="total").startswith(
        "total: value differs from the reference: expected "
    )
    assert failure(lambda x: float("nan"), total, matrix, name="total").startswith(
        "total: the value is nan, where the reference is finite"
    )
    assert failure(lambda x: "12.5", total, matrix, name="total").startswith(
        "total: wrong type: expected a number, got str"
    )


def test_stochastic_functions_see_the_same_random_numbers_and_global_rng_is_restored():
    def reparameterize(mu, logvar):
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def inputs(g):
        return torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g)

    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    assert check_function(lambda mu, lv: mu + (0.5 * lv).exp() * torch.randn(mu.shape),
                          reparameterize, inputs, name="reparameterize")
    assert torch.equal(torch.rand(3), expected_next)


def test_in_place_edits_by_the_student_do_not_reach_the_reference():
    fixed = torch.arange(4.0)
    assert check_function(lambda x: x.mul_(x), square, lambda g: fixed, name="square")
    assert torch.equal(fixed, torch.arange(4.0))


def test_check_failure_is_an_assertion_and_renders_without_traceback():
    err = CheckFailure("square: wrong shape")
    assert isinstance(err, AssertionError)
    assert err._render_traceback_() == ["CheckFailure: square: wrong shape"]


# --- check_gradients_flow --------------------------------------------------------------------


def leaves():
    return torch.randn(3, 2, requires_grad=True), torch.randn(3, 2, requires_grad=True)


def reparameterize(mu, logvar):
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def test_gradients_flow(capsys):
    inputs = leaves()
    assert check_gradients_flow(reparameterize, inputs, name="reparameterize") is True
    assert capsys.readouterr().out == "✔ reparameterize: gradients flow to mu, logvar\n"
    assert inputs[0].grad is None, "the caller's tensors are left alone"


def test_gradients_of_a_softmax_are_seen_despite_its_constant_sum():
    assert check_gradients_flow(lambda x: torch.softmax(x, -1), (leaves()[0],), name="softmax")


def test_nested_and_keyword_inputs_are_named(capsys):
    def f(xs, scale):
        return xs[0] * scale + xs[1]

    inputs = {"xs": list(leaves()), "scale": torch.tensor(2.0)}
    assert check_gradients_flow(f, inputs, name="f")
    assert capsys.readouterr().out == "✔ f: gradients flow to xs[0], xs[1]\n"


def test_detached_output():
    message = failure(lambda mu, logvar: (mu + logvar).detach(), leaves(),
                      name="reparameterize", check=check_gradients_flow)
    assert message.startswith(
        "reparameterize: the output is cut off from the inputs' gradients (it has no autograd history)"
    )


def test_gradient_missing_for_one_input():
    def detached_std(mu, logvar):
        return mu + torch.exp(0.5 * logvar).detach() * torch.randn_like(mu)

    message = failure(detached_std, leaves(), name="reparameterize", check=check_gradients_flow)
    assert message.startswith("reparameterize: no gradient reaches `logvar`; ")


def test_zero_gradient():
    message = failure(lambda mu, logvar: mu.round() + logvar, leaves(),
                      name="reparameterize", check=check_gradients_flow)
    assert message.startswith("reparameterize: the gradient with respect to `mu` is zero everywhere")


def test_non_finite_gradient():
    message = failure(lambda x: x.sqrt(), (torch.zeros(3, requires_grad=True),),
                      name="root", check=check_gradients_flow)
    assert message == "root: the gradient with respect to `x` contains NaN or inf"


def test_gradients_not_implemented_exception_none_and_non_tensor():
    def stub(mu, logvar):
        raise NotImplementedError("Question q2: implement this and remove the raise")

    assert failure(stub, leaves(), name="rep", check=check_gradients_flow) == (
        "rep not implemented yet: Question q2: implement this and remove the raise"
    )
    assert failure(lambda mu, logvar: mu @ logvar, leaves(), name="rep",
                   check=check_gradients_flow).startswith("rep raised RuntimeError at line ")
    assert failure(lambda mu, logvar: None, leaves(), name="rep", check=check_gradients_flow) == (
        "rep returned None; did you forget the `return`?\n"
        "  called as rep(mu=Tensor(3, 2) float32, logvar=Tensor(3, 2) float32)"
    )
    assert failure(lambda mu, logvar: (mu + logvar).sum().item(), leaves(), name="rep",
                   check=check_gradients_flow).startswith(
        "rep: expected a floating-point tensor output, got "
    )


def test_no_input_requiring_grad_is_a_mistake_of_the_check_author():
    with pytest.raises(ValueError, match="no input tensor has requires_grad=True"):
        check_gradients_flow(square, (torch.ones(3),), name="square")
