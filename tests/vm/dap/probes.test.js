// Conditional breakpoints, hit conditions and logpoints compiled into in-guest probes,
// and the host fallback beyond them, driven by VS Code's debug-adapter test client.
// Run by tests/vm/test_dap.py (which passes the paths in QSTEP_DAP_TEST).
const assert = require('assert');
const { env, adapterSession } = require('./client');

const SRC = env.source;
const [V4, V6, NOVIP] = env.packets;

describe('qstep dap: breakpoints as in-guest probes', function () {
  this.timeout(600000);
  const session = adapterSession();

  it('stops, logs and counts exactly, evaluating false conditions in the guest', async () => {
    const { dc, outputs, changed } = session;
    await dc.initializeRequest({ adapterID: 'qstep', linesStartAt1: true, columnsStartAt1: true,
                                 pathFormat: 'path' });
    const initialized = dc.waitForEvent('initialized');
    // Packets: vip 1, vip 2, no vip, vip 1, vip 2.
    await dc.launchRequest({ program: env.object, packets: [V4, V6, NOVIP, V4, V6], maps: env.maps });
    await initialized;

    const ibps = (await dc.customRequest('setInstructionBreakpoints', { breakpoints: [
      { instructionReference: 'l4lb_ingress:0', hitCondition: '== 4' }] })).body.breakpoints;
    const fbps = (await dc.setFunctionBreakpointsRequest({ breakpoints: [
      { name: 'process_packet', condition: 'is_ipv6', hitCondition: '% 2' }] })).body.breakpoints;
    const bps = (await dc.setBreakpointsRequest({ source: { path: SRC }, breakpoints: [
      { line: 144, condition: 'vip->vip_num == 2' },
      { line: 171, logMessage: 'vip {vip_num} slot {slot} v6 {is_ipv6} ctl {ctl_pos}',
        hitCondition: '>= 3' },
      { line: 107, condition: 'reason == 3' },  // in count_drop, inlined at every call
    ] })).body.breakpoints;
    const [entry] = ibps;
    const [v6every2] = fbps;
    const [cond, log, drop] = bps;
    for (const bp of [cond, log, entry, v6every2]) {
      assert.match(bp.message, /^in-guest probe \(hw_breakpoint at 0x[0-9a-f]+\): the guest evaluates it/, bp.message);
    }
    // The four debug registers are taken: evaluated on the host (no packet drops).
    assert.match(drop.message, /^host breakpoint: its \d+ locations need more free hardware breakpoints \(x86 has 4\); evaluated on the host/);

    // stopped/terminated events in order (no pending waits left behind at the end)
    const events = [];
    let wake = () => {};
    dc.on('stopped', (e) => { events.push(e); wake(); });
    dc.on('terminated', () => { events.push(null); wake(); });
    const nextEvent = async () => {
      while (events.length === 0) await new Promise((resolve) => { wake = resolve; });
      return events.shift();
    };
    const stops = [];
    await dc.configurationDoneRequest();
    for (;;) {
      const stop = await nextEvent();
      if (stop === null) break;
      const st = (await dc.stackTraceRequest({ threadId: 1 })).body.stackFrames;
      const packet = outputs.filter((o) => o.output.startsWith('packet ')).length + 1;
      stops.push([packet, stop.body.hitBreakpointIds, st[0].name, st[0].line]);
      if (stop.body.hitBreakpointIds[0] === cond.id) {
        const vip = (await dc.evaluateRequest({ expression: 'vip->vip_num', context: 'watch', frameId: 1 })).body.result;
        assert.strictEqual(vip, '2');
      }
      await dc.continueRequest({ threadId: 1 });
    }
    assert.deepStrictEqual(stops, [
      [2, [cond.id], 'process_packet', 144],
      [4, [entry.id], 'l4lb_ingress', 190],
      [5, [v6every2.id], 'process_packet', 130],
      [5, [cond.id], 'process_packet', 144],
    ]);
    const lines = outputs.map((o) => o.output.split('\n')[0].replace(/, \d+ ns\]/, ']'));
    assert.deepStrictEqual(lines, [
      'packet 1: [program exited: retval 7 (TC_ACT_REDIRECT)]',
      'packet 2: [program exited: retval 7 (TC_ACT_REDIRECT)]',
      'packet 3: [program exited: retval 0 (TC_ACT_OK)]',
      'vip 1 slot 6 v6 false ctl 0',
      'packet 4: [program exited: retval 7 (TC_ACT_REDIRECT)]',
      'vip 2 slot 8 v6 true ctl 1',
      'packet 5: [program exited: retval 7 (TC_ACT_REDIRECT)]',
      'maps after the runs:',
      `breakpoint ${entry.id} (in-guest probe): reached 5, condition true 5, skipped 4, written 1, dropped 0, stops 1`,
      `breakpoint ${v6every2.id} (in-guest probe): reached 5, condition true 2, skipped 1, written 1, dropped 0, stops 1`,
      `breakpoint ${cond.id} (in-guest probe): reached 4, condition true 2, skipped 0, written 2, dropped 0, stops 2`,
      `breakpoint ${log.id} (in-guest probe): reached 4, condition true 4, skipped 2, written 2, dropped 0, stops 0`,
      // Only the four stops the user saw stopped the VM: every false condition and
      // every skipped hit cost a probe run in the guest.
      'VM stops: 4',
    ]);
    assert.deepStrictEqual(changed, []);  // set before the runs: no method changed later
  });
});
