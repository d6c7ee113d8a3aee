"""The dashboard in headless Chromium against a real farm: an operator logs
in, submits a job through the upload form, watches the printer card go
idle -> printing -> awaiting clear without a reload, presses "Bed is clear"
and sees the next copy start; a viewer sees no action buttons and the API
refuses its writes. Screenshots of the main views go to artefacts/.

The printer that is cleared by hand is a scripted agent (tests/sched's
Agent) whose capabilities say it cannot clear its own bed: pf-agent's sim
printers clear themselves at once, and the scripted one lets the test hold
each state until the browser has shown it, whatever the machine's speed. A
real sim pf-agent runs beside it."""

import json
import os

from conftest import ARTEFACTS, sched, unique, gcode

pb = sched.pb
EST_SECONDS = 1500


def card_state(printer):
    return ("(() => { const c = document.querySelector('.card[data-printer-id=%s]');"
            " return c ? c.dataset.state : null; })()" % json.dumps(printer))


def login(page, token, role):
    page.wait("!document.querySelector('#login-view').hidden", 60, "the login form")
    page.eval("document.querySelector('#token').value = %s;"
              "document.querySelector('#login-form').requestSubmit(); true" % json.dumps(token))
    page.wait("!document.querySelector('#app-view').hidden && "
              "document.querySelector('#role').textContent === %s" % json.dumps(role), 60,
              "the dashboard as " + role)


def show(page, view):
    page.eval("document.querySelector('.tab[data-view=%s]').click(); true" % view)
    page.wait("!document.querySelector('#view-%s').hidden" % view, 10, "the %s view" % view)


def test_operator_flow_and_viewer(web_farm, chromium, tmp_path):
    wf = web_farm(printers=1)
    printer, profile = unique("manual"), unique("manualprof")
    agent = wf.farm.agent(printer, profile, materials=[(0, "PLA", "black")],
                          capabilities={"driver": "scripted", "extruders": 1,
                                        "auto_clear": False})
    agent.wait_welcome()
    wf.farm.wait_printer(printer, pb.PRINTER_STATE_IDLE)
    shots = os.path.join(ARTEFACTS, "browser")

    browser = chromium()
    page = browser.page
    page.navigate(wf.url + "/")
    login(page, wf.tokens["operator"], "operator")
    page.eval("window.__noReload = 42; true")
    page.wait(card_state(printer) + " === 'idle'", 60, "the idle printer card")
    page.wait("document.querySelector('#live').textContent === 'live'", 60, "live updates")
    page.screenshot(os.path.join(shots, "printers-idle.png"))

    # Submit two copies through the upload form.
    path = str(tmp_path / "cube.gcode")
    with open(path, "wb") as f:
        f.write(gcode(EST_SECONDS, tag="browser"))
    show(page, "queue")
    page.eval("document.querySelector('.gcode-row .profile').value = %s;"
              "const f = document.querySelector('#submit-form');"
              "f.elements.count.value = '2'; f.elements.material.value = 'PLA';"
              "f.elements.name.value = 'browser-cube'; true" % json.dumps(profile))
    page.set_files(".gcode-row .gcode", [path])
    page.screenshot(os.path.join(shots, "queue-form.png"))
    page.eval("document.querySelector('#submit-form').requestSubmit(); true")
    page.wait("document.querySelector('#toast').textContent.startsWith('Queued browser-cube')",
              60, "the submit to succeed")
    page.wait("[...document.querySelectorAll('#jobs tbody tr')].some(r => "
              "r.textContent.includes('browser-cube'))", 30, "the job in the queue table")

    # The card follows the print without a reload.
    show(page, "printers")
    first = agent.wait_start(timeout=60)
    agent.wait_ack(agent.started(first.attempt_id))
    agent.status(pb.PRINTER_STATE_PRINTING, first.attempt_id, progress=0.4)
    seen = [page.wait(card_state(printer) + " === 'printing' && 'printing'", 120,
                      "the card to show printing")]
    page.wait("(e => e && e.textContent.startsWith('40%%'))(document.querySelector("
              "'.card[data-printer-id=%s] .progress'))" % json.dumps(printer), 60,
              "the progress line at 40%")
    page.screenshot(os.path.join(shots, "printers-printing.png"))
    show(page, "queue")
    page.screenshot(os.path.join(shots, "queue.png"))
    show(page, "printers")
    agent.wait_ack(agent.succeeded(first.attempt_id))
    agent.status(pb.PRINTER_STATE_AWAITING_CLEAR, first.attempt_id, progress=1.0)
    seen.append(page.wait(card_state(printer) + " === 'awaiting_clear' && 'awaiting_clear'", 120,
                          "the card to show awaiting clear"))
    page.screenshot(os.path.join(shots, "printers-awaiting-clear.png"))
    assert seen == ["printing", "awaiting_clear"]
    assert page.eval("window.__noReload") == 42

    # Press "Bed is clear": the second copy starts.
    page.eval("document.querySelector('.card[data-printer-id=%s] button[data-action=clear]')"
              ".click(); true" % json.dumps(printer))
    toast = page.wait("(t => t.startsWith('Bed clear') && t)"
                      "(document.querySelector('#toast').textContent)", 60,
                      "the bed-clear outcome")
    assert toast == "Bed clear on %s: done" % printer
    second = agent.wait_start(timeout=60)
    assert second.job_id == first.job_id and second.attempt_id != first.attempt_id
    agent.wait_ack(agent.started(second.attempt_id))
    page.wait(card_state(printer) + " === 'printing'", 120, "the next copy to start")
    assert page.eval("window.__noReload") == 42
    jobs = [j for j in wf.farm.stub.ListJobs(pb.ListJobsRequest(page_size=100), timeout=15,
                                             metadata=wf.farm.metadata).jobs
            if j.name == "browser-cube"]
    assert len(jobs) == 1 and jobs[0].count == 2 and jobs[0].succeeded >= 1

    show(page, "health")
    page.wait("document.querySelector('#leader').textContent.includes(%s)"
              % json.dumps(wf.farm.leader().address), 30, "the leader")
    page.wait("document.querySelectorAll('#events li').length > 0", 30, "the event log")
    page.eval("const i = document.querySelector('#event-filter'); i.value = 'attempt_started';"
              "i.dispatchEvent(new Event('input')); true")
    page.wait("[...document.querySelectorAll('#events li')].length > 0 && "
              "[...document.querySelectorAll('#events li')].every(li => "
              "li.textContent.includes('attempt_started'))", 30, "the filtered event log")
    page.screenshot(os.path.join(shots, "health.png"))

    # A viewer: no action buttons, no submit form, and writes are refused.
    page.eval("document.querySelector('#logout').click(); true")
    login(page, wf.tokens["viewer"], "viewer")
    page.wait("document.querySelector('.card[data-printer-id=%s]') !== null"
              % json.dumps(printer), 60, "the viewer's printer card")
    show(page, "queue")
    page.wait("document.querySelectorAll('#jobs tbody tr').length > 0", 30, "the viewer's queue")
    assert page.eval("document.querySelectorAll('button.action').length") == 0
    assert page.eval("document.querySelector('#submit-form').offsetParent === null")
    page.screenshot(os.path.join(shots, "viewer-queue.png"))
    status = page.eval("fetch('/api/printers/' + %s + '/clear', {method: 'POST'})"
                       ".then(r => r.status)" % json.dumps(printer))
    assert status == 403
    status = page.eval("fetch('/api/jobs/%s/hold', {method: 'POST'}).then(r => r.status)"
                       % jobs[0].id)
    assert status == 403

    # Phone-sized window: the grid becomes one column.
    page.call("Emulation.setDeviceMetricsOverride", width=390, height=844,
              deviceScaleFactor=2, mobile=True)
    show(page, "printers")
    page.screenshot(os.path.join(shots, "phone-printers.png"))
    for name in ("printers-printing.png", "printers-awaiting-clear.png", "queue.png",
                 "health.png", "viewer-queue.png"):
        assert os.path.getsize(os.path.join(shots, name)) > 1000
