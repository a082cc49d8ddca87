// A full qstep DAP session driven by VS Code's own debug-adapter test client.
// Run by tests/vm/test_dap.py (which passes the paths in QSTEP_DAP_TEST).
const assert = require('assert');
const { DebugClient } = require('@vscode/debugadapter-testsupport');

const env = JSON.parse(process.env.QSTEP_DAP_TEST);
const SRC = env.source;

describe('qstep dap on the l4lb example', function () {
  this.timeout(600000);
  let dc;
  const outputs = [];

  before(async () => {
    dc = new DebugClient(env.qstep, 'dap', 'qstep');
    dc.defaultTimeout = 300000;
    dc.on('output', (e) => outputs.push(e.body));
    await dc.start();
  });
  after(() => dc.stop());  // sends disconnect: the adapter shuts the guest down and exits

  it('runs a whole session', async () => {
    const caps = await dc.initializeRequest({ adapterID: 'qstep', linesStartAt1: true,
                                              columnsStartAt1: true, pathFormat: 'path' });
    assert.ok(caps.body.supportsConditionalBreakpoints && caps.body.supportsLogPoints);
    const initialized = dc.waitForEvent('initialized');
    await dc.launchRequest({ program: env.object, packets: env.packets, maps: env.maps });
    await initialized;

    const bps = await dc.setBreakpointsRequest({ source: { path: SRC }, breakpoints: [
      { line: 144, condition: 'vip->vip_num == 2' },
      { line: 171, logMessage: 'vip {vip_num} slot {slot}' },
      { line: 133 },
    ] });
    const [cond, log, nocode] = bps.body.breakpoints;
    assert.deepStrictEqual([cond.verified, cond.line, log.verified, log.line], [true, 144, true, 171]);
    assert.strictEqual(nocode.verified, false);
    assert.strictEqual(nocode.message,
      'line 133 of l4lb.bpf.c has no code after optimisation; nearest lines with code: 132, 141');

    const fbps = await dc.setFunctionBreakpointsRequest({ breakpoints: [
      { name: 'process_packet', hitCondition: '== 99' }, { name: 'no_such_func' }] });
    assert.deepStrictEqual(fbps.body.breakpoints.map((b) => [b.verified, b.line]),
      [[true, 130], [false, undefined]]);
    assert.match(fbps.body.breakpoints[1].message, /^no function 'no_such_func'; functions: /);
    const ibps = await dc.customRequest('setInstructionBreakpoints', { breakpoints: [
      { instructionReference: 'l4lb_ingress:0', condition: '$r1 == 0' }] });
    assert.deepStrictEqual(ibps.body.breakpoints.map((b) => [b.verified, b.line]), [[true, 190]]);

    const stopped = dc.waitForEvent('stopped');
    await dc.configurationDoneRequest();
    const stop = await stopped;
    assert.deepStrictEqual(stop.body.hitBreakpointIds, [cond.id]);
    assert.strictEqual(stop.body.reason, 'breakpoint');
    // Packet 1 (vip 1) passed line 144 without stopping: only its logpoint and result.
    const before = outputs.map((o) => o.output);
    assert.deepStrictEqual(before.slice(0, 2).map((t) => t.split('\n')[0]),
      ['vip 1 slot 6', 'packet 1: [program exited: retval 7 (TC_ACT_REDIRECT), ' +
       before[1].split('), ')[1].split('\n')[0]]);

    let st = await dc.stackTraceRequest({ threadId: 1 });
    assert.deepStrictEqual(st.body.stackFrames.map((f) => [f.name, f.line, f.source.path]),
      [['process_packet', 144, SRC], ['l4lb_ingress', 234, SRC]]);

    const scopes = (await dc.scopesRequest({ frameId: st.body.stackFrames[0].id })).body.scopes;
    assert.deepStrictEqual(scopes.map((s) => s.name), ['Locals', 'Arguments', 'Registers', 'Maps']);
    const args = (await dc.variablesRequest({ variablesReference: scopes[1].variablesReference })).body.variables;
    assert.deepStrictEqual(args.map((v) => [v.name, v.type]),
      [['skb', 'struct __sk_buff *'], ['pkt', 'struct pkt_desc *'], ['is_ipv6', '_Bool']]);
    assert.strictEqual(args[2].value, 'true');
    const locals = (await dc.variablesRequest({ variablesReference: scopes[0].variablesReference })).body.variables;
    const vip = locals.find((v) => v.name === 'vip');
    assert.match(vip.value, /^\(struct vip_meta \*\) 0xffff/);
    const tkey = locals.find((v) => v.name === 'tkey');
    const members = (await dc.variablesRequest({ variablesReference: tkey.variablesReference })).body.variables;
    assert.deepStrictEqual(members.slice(0, 1).map((v) => [v.name, v.value]), [['tunnel_id', '0']]);
    const regs = (await dc.variablesRequest({ variablesReference: scopes[2].variablesReference })).body.variables;
    assert.deepStrictEqual(regs.map((r) => r.name), ['r0', 'r1', 'r2', 'r3', 'r4', 'r5', 'r6', 'r7', 'r8', 'r9', 'r10']);
    assert.strictEqual(regs[0].value, vip.value.split(' ').pop());  // r0 = the lookup's result

    const dis = (await dc.customRequest('disassemble', {
      memoryReference: st.body.stackFrames[0].instructionPointerReference, instructionCount: 2 })).body;
    assert.deepStrictEqual(dis.instructions.map((i) => [i.instruction.split('  | ')[0], i.line, i.symbol]),
      [['r6 = *(u32 *)(r0 +4)', 144, 'process_packet+15'], [dis.instructions[1].instruction.split('  | ')[0], 144,
        'process_packet+16']]);
    const mem = (await dc.customRequest('readMemory', { memoryReference: regs[0].value, count: 8 })).body;
    assert.strictEqual(Buffer.from(mem.data, 'base64').toString('hex'), '0000000002000000');

    const maps = (await dc.variablesRequest({ variablesReference: scopes[3].variablesReference })).body.variables;
    assert.deepStrictEqual(maps.map((m) => m.name),
      ['ch_rings', 'ctl_array', 'drops', 'reals', 'stats', 'vip_map']);
    const stats = maps.find((m) => m.name === 'stats');
    const statsEntries = (await dc.variablesRequest({ variablesReference: stats.variablesReference })).body.variables;
    // Packet 1 was counted; packet 2 has not reached its update yet.
    assert.deepStrictEqual(statsEntries.map((e) => [e.name, e.value]), [['1', '{packets: 1, bytes: 72}']]);

    const star = await dc.evaluateRequest({ expression: '*vip', context: 'hover', frameId: 1 });
    assert.strictEqual(star.body.result, '{flags = 0, vip_num = 2}');
    const fields = (await dc.variablesRequest({ variablesReference: star.body.variablesReference })).body.variables;
    assert.deepStrictEqual(fields.map((v) => [v.name, v.value]), [['flags', '0'], ['vip_num', '2']]);

    await Promise.all([dc.nextRequest({ threadId: 1 }), dc.assertStoppedLocation('step', { path: SRC, line: 147 })]);
    await Promise.all([dc.stepInRequest({ threadId: 1 }), dc.waitForEvent('stopped')]);
    st = await dc.stackTraceRequest({ threadId: 1 });
    assert.deepStrictEqual(st.body.stackFrames.map((f) => [f.name, f.line]),
      [['flow_hash [inlined]', 118], ['process_packet', 147], ['l4lb_ingress', 234]]);
    await Promise.all([dc.stepOutRequest({ threadId: 1 }), dc.waitForEvent('stopped')]);
    st = await dc.stackTraceRequest({ threadId: 1 });
    assert.deepStrictEqual(st.body.stackFrames.map((f) => [f.name, f.line]),
      [['process_packet', 147], ['l4lb_ingress', 234]]);
    // Out of process_packet: its logpoint on the way still prints.
    await Promise.all([dc.stepOutRequest({ threadId: 1 }), dc.waitForEvent('stopped')]);
    st = await dc.stackTraceRequest({ threadId: 1 });
    assert.deepStrictEqual(st.body.stackFrames.map((f) => [f.name, f.line]), [['l4lb_ingress', 235]]);
    const r0 = (await dc.evaluateRequest({ expression: '$r0', context: 'watch', frameId: 1 })).body.result;
    assert.strictEqual(r0, '0x7 (7)');

    const exited = dc.waitForEvent('exited');
    const terminated = dc.waitForEvent('terminated');
    await dc.continueRequest({ threadId: 1 });
    assert.strictEqual((await exited).body.exitCode, 0);  // the last packet: no VIP, TC_ACT_OK
    await terminated;
    const lines = outputs.map((o) => o.output.split('\n')[0].replace(/, \d+ ns\]/, ']'));
    assert.deepStrictEqual(lines, [
      'vip 1 slot 6', 'packet 1: [program exited: retval 7 (TC_ACT_REDIRECT)]',
      'vip 2 slot 8', 'packet 2: [program exited: retval 7 (TC_ACT_REDIRECT)]',
      'packet 3: [program exited: retval 0 (TC_ACT_OK)]', 'maps after the runs:',
      `breakpoint ${cond.id} (in-guest probe): reached 2, condition true 1, skipped 0, written 1, dropped 0, stops 1`,
      `breakpoint ${log.id} (in-guest probe): reached 2, condition true 2, skipped 0, written 2, dropped 0, stops 0`,
      `breakpoint ${fbps.body.breakpoints[0].id} (in-guest probe): reached 3, condition true 3, skipped 3, written 0, dropped 0, stops 0`,
      `breakpoint ${ibps.body.breakpoints[0].id} (in-guest probe): reached 3, condition true 0, skipped 0, written 0, dropped 0, stops 0`,
      'VM stops: 3']);
    const mapsText = outputs[lines.indexOf('maps after the runs:')].output;
    assert.ok(mapsText.includes('  stats:\n    1 = {packets: 1, bytes: 72}\n' +
                            '    2 = {packets: 1, bytes: 74}\n'), mapsText);
  });
});
