from axolotl_sealong.core.metrics import extract_final_answer, normalize_answer, sub_em
from axolotl_sealong.core.prompts import INSTRUCTIONS, build_user_prompt


def test_normalize_answer_squad_style():
    assert normalize_answer("The  Eiffel-Tower, in Paris!") == "eiffeltower in paris"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("THE") == ""


def test_sub_em_substring_after_normalisation():
    pred = "Step 1: ... So the answer is: The Beatles."
    assert sub_em(pred, ["beatles"]) == 1.0
    assert sub_em(pred, ["Rolling Stones", "the beatles"]) == 1.0
    assert sub_em(pred, ["Rolling Stones"]) == 0.0
    # word boundaries are not required: SubEM is a plain substring test
    assert sub_em("in 1987,", ["198"]) == 1.0


def test_sub_em_empty_gold_never_matches():
    assert sub_em("anything", [""]) == 0.0
    assert sub_em("anything", ["the"]) == 0.0  # normalises to ""
    assert sub_em("anything", []) == 0.0


def test_extract_final_answer():
    assert extract_final_answer("reasoning...\nThe answer is Paris.\n") == "Paris."
    assert extract_final_answer("a\nFinal answer: **Kel**\nThanks") == "Kel"
    assert extract_final_answer("first line\nlast line  \n\n") == "last line"
    assert extract_final_answer("") == ""


def test_prompt_is_the_papers_template_verbatim():
    got = build_user_prompt("CTX", "Who?", "plan_and_solve")
    assert got == (
        "\nCTX\n\nWho?\nLet's first understand the problem and devise a plan to "
        "solve it. Then, let's carry out the plan and solve the problem "
        "step-by-step.\n"
    )
    # "none" strips the dangling newline exactly as the reference code does
    assert build_user_prompt("CTX", "Who?", "none") == "\nCTX\n\nWho?\n"
    assert set(INSTRUCTIONS) == {
        "plan_and_solve",
        "step_by_step",
        "fact_and_reflection",
        "direct_answer",
        "none",
    }


def test_unknown_strategy_names_the_choices():
    import pytest

    with pytest.raises(ValueError, match="plan_and_solve"):
        build_user_prompt("c", "q", "chain_of_thought")


def test_fit_prompt_counted_reports_the_whole_prompt(tiny_tokenizer_dir):
    """The count a skipped or refused prompt reports is the whole prompt's,
    the one fit_prompt measured first; the fitted result is fit_prompt's."""
    from transformers import AutoTokenizer

    from axolotl_sealong.core.prompts import (
        fit_prompt,
        fit_prompt_counted,
        prompt_tokens,
    )

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    context = " ".join(f"word{i}" for i in range(200))
    whole = prompt_tokens(tok, build_user_prompt(context, "Who?", "plan_and_solve"))
    # fits whole; fits only cut; cannot fit (3 tokens: not even the instruction)
    for budget, cut_fits in ((whole + 5, True), (whole - 40, True), (3, False)):
        for truncate in (True, False):
            args = (tok, context, "Who?", "plan_and_solve", budget, truncate)
            fitted, counted = fit_prompt_counted(*args)
            assert counted == whole
            assert fitted == fit_prompt(*args)
            fits = whole <= budget or (truncate and cut_fits)
            assert (fitted is not None) == fits
