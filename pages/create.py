"""Create: pick a model, fill the form built from the catalog, Generate, watch the result."""

import streamlit as st

from comet.ui import card, form, image_input, request_view, spend_view, submit
from comet.ui.chrome import page_setup, problem_list
from comet.ui.safe import plain

ATTEMPTED_KEY = "create.attempted"

conn = page_setup()
st.title("Create")

form_column, result_column = st.columns([5, 6], gap="large")

with form_column:
    form.apply_edit_link(conn.store)  # "Edit this image": before the picker, which it may set
    model = form.model_picker()
    others = form.compare_picker(model)
    # While the JSON editor is on, it is what is sent: the form is drawn paused, not in charge.
    json_mode = request_view.raw_mode()
    form.parameter_form(model, has_image=image_input.has_images(model), disabled=json_mode)
    images = image_input.image_inputs(model, disabled=json_mode)
    form_input = form.with_images(model, form.built_input(model), images.values)
    raw = request_view.raw_editor(form_input)
    plan = form.plan(model, others, form_input, images, raw)

    # Read as a return value, not an on_click callback: a callback would send the values from the
    # run before the click, losing a prompt typed just before pressing the button.
    # While a create is in flight, a disabled "Sending…" stands in its place: one create per intent.
    label = "Generate" if not others else f"Generate with {len(others) + 1} models"
    if submit.generate_button(label):
        st.session_state[ATTEMPTED_KEY] = True
        if not plan.problems:
            submit.send(conn, plan.outgoing, [image_input.parent_of(images, body) for _, body in plan.outgoing])
    if plan.outgoing:
        spend_view.cost_caption(conn, plan.outgoing)
    if plan.problems and st.session_state.get(ATTEMPTED_KEY):
        problem_list("Fix these before sending; nothing was sent:", plan.problems, error=True)
    if plan.warnings:
        problem_list("Heads-up:", plan.warnings, error=False)
    if adjusted := [card.model_title(body.model) for body in plan.bodies if body.notes]:
        st.caption(f":material/info: Not all your settings apply to {plain(', '.join(adjusted))}: "
                   "see what each model gets under **Request** below.")
    submit.show_failures()
    request_view.request_preview(plan.bodies, None if conn.demo else conn.client.base_url, plan.blocked)

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
