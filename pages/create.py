"""Create: pick a model, fill the form built from the catalog, Generate, watch the result."""

import streamlit as st

from comet import catalog
from comet.ui import card, form, image_input, request_view, submit
from comet.ui.chrome import page_setup, problem_list

COMPARE_KEY = "compare.models"
ATTEMPTED_KEY = "create.attempted"

conn = page_setup()
st.title("Create")

form_column, result_column = st.columns([5, 6], gap="large")

with form_column:
    model = form.model_picker()
    others = st.multiselect(
        "Compare with", [m for m in catalog.MODELS if m != model.id], key=COMPARE_KEY, max_selections=3,
        format_func=card.model_title, placeholder="Optional: up to 3 more models, side by side",
        help="The same prompt, and the parameters these models share, go to every model at once.",
    )
    form.parameter_form(model)
    images = image_input.image_inputs(model)
    form_input = form.with_images(model, form.built_input(model), images.values)
    raw = request_view.raw_editor(form_input)
    model_input = raw.model_input if raw and raw.model_input is not None else form_input

    outgoing = [(model.id, model_input)] + [(m, catalog.adapt_input(m, model_input)) for m in others]
    problems = list(raw.problems if raw else []) + images.problems
    warnings = []
    for model_id, body in outgoing:
        prefix = f"{card.model_title(model_id)}: " if others else ""
        found = catalog.validate(model_id, body)
        problems += [prefix + p.message for p in catalog.errors(found)]
        warnings += [prefix + p.message for p in catalog.warnings(found)]

    # Read as a return value, not an on_click callback: a callback would send the values from the
    # run before the click, losing a prompt typed just before pressing the button.
    # While a create is in flight, a disabled "Sending…" stands in its place: one create per intent.
    label = "Generate" if not others else f"Generate with {len(outgoing)} models"
    if submit.generate_button(label):
        st.session_state[ATTEMPTED_KEY] = True
        if not problems:
            submit.send(conn, outgoing)
    if problems and st.session_state.get(ATTEMPTED_KEY):
        problem_list("Fix these before sending; nothing was sent:", problems, error=True)
    if warnings:
        problem_list("Heads-up:", warnings, error=False)
    submit.show_failures()
    request_view.request_preview(model.id, model_input, None if conn.demo else conn.client.base_url)

with result_column:
    groups = submit.groups()
    if not groups:
        st.info("Your images appear here. Type a prompt and press **Generate**.", icon=":material/image:")
    else:
        latest = groups[0]
        columns = st.columns(min(len(latest), 2)) if len(latest) > 1 else [st.container()]
        for n, prediction_id in enumerate(latest):
            with columns[n % len(columns)]:
                card.live_card(conn, prediction_id, key=f"latest-{prediction_id}", on_reuse=form.reuse)

if len(groups := submit.groups()) > 1:
    st.subheader("Earlier in this session")
    card.gallery(conn, [pid for group in groups[1:] for pid in group])
