// Stepping back in a qstep DAP session (launch "record": true), driven by VS Code's own
// debug-adapter test client. Run by tests/vm/test_dap.py (paths in QSTEP_DAP_TEST).
// The live run stops at line 178; stepBack and reverseContinue go back through the
// recording, C variables are read there, and continue replays to the live point and
// then runs live to the packet's real result.
const assert = require('assert');
const { DebugClient } = require('@vscode/debugadapter-testsupport');

const env = JSON.parse(process.env.QSTEP_DAP_TEST);
const SRC = env.source;

describe('qstep dap: stepping back on the l4lb example', function () {
  this.timeout(600000);
  let dc;
  const outputs = [];
  const capabilities = [];

  before(async () => {
    dc = new DebugClient(env.qstep, 'dap', 'qstep');
    dc.defaultTimeout = 300000;
    dc.on('output', (e) => outputs.push(e.body));
    dc.on('capabilities', (e) => capabilities.push(e.body.capabilities));
    await dc.start();
  });
  after(() => dc.stop());

  const top = async () => {
    const st = await dc.stackTraceRequest({ threadId: 1 });
    return st.body.stackFrames.map((f) => [f.name, f.line]);
  };
  const evaluate = async (expression) =>
    (await dc.evaluateRequest({ expression, context: 'watch', frameId: 1 })).body.result;
  const stoppedBy = async (request, args) => {
    const stopped = dc.waitForEvent('stopped');
    await dc.customRequest(request, { threadId: 1, ...args });
    return (await stopped).body;
  };

  it('steps back, continues back to a breakpoint, and forward to the live run', async () => {
    const caps = await dc.initializeRequest({ adapterID: 'qstep', linesStartAt1: true,
                                              columnsStartAt1: true, pathFormat: 'path' });
    assert.strictEqual(caps.body.supportsStepBack, false);  // until a recording launch
    const initialized = dc.waitForEvent('initialized');
    await dc.launchRequest({ program: env.object, packets: [env.packets[1]], maps: env.maps,
                             record: true });
    await initialized;
    assert.deepStrictEqual(capabilities, [{ supportsStepBack: true }]);
    let bps = await dc.setBreakpointsRequest({ source: { path: SRC }, breakpoints: [{ line: 178 }] });
    const live = dc.waitForEvent('stopped');
    await dc.configurationDoneRequest();
    assert.strictEqual((await live).body.reason, 'breakpoint');
    assert.deepStrictEqual(await top(), [['process_packet', 178], ['l4lb_ingress', 234]]);
    const vipLive = await evaluate('vip_num');
    const r10 = await evaluate('$r10');

    assert.strictEqual((await stoppedBy('stepBack', { granularity: 'instruction' })).reason, 'step');
    assert.deepStrictEqual(await top(), [['process_packet', 174], ['l4lb_ingress', 234]]);
    assert.strictEqual(await evaluate('$r10'), r10);
    await stoppedBy('stepBack', {});
    assert.deepStrictEqual((await top())[0], ['process_packet', 173]);
    assert.strictEqual(await evaluate('vip_num'), vipLive);  // a stack variable, in the past

    bps = await dc.setBreakpointsRequest({ source: { path: SRC },
                                           breakpoints: [{ line: 171 }, { line: 178 }] });
    const back = await stoppedBy('reverseContinue', {});
    assert.deepStrictEqual([back.reason, back.hitBreakpointIds], ['breakpoint', [bps.body.breakpoints[0].id]]);
    assert.deepStrictEqual((await top())[0], ['process_packet', 171]);

    // Back to the run's start: the client is told there is no more history.
    await dc.setBreakpointsRequest({ source: { path: SRC }, breakpoints: [] });
    await stoppedBy('reverseContinue', {});
    assert.deepStrictEqual(await top(), [['l4lb_ingress', 190]]);
    assert.ok(outputs.some((o) => o.output === 'No more reverse-execution history.\n'));
    bps = await dc.setBreakpointsRequest({ source: { path: SRC },
                                           breakpoints: [{ line: 171 }, { line: 178 }] });

    // Forward: replayed through line 171 to the live point (its breakpoint), then live.
    const first = await stoppedBy('continue', {});
    assert.deepStrictEqual(first.hitBreakpointIds, [bps.body.breakpoints[0].id]);
    assert.deepStrictEqual((await top())[0], ['process_packet', 171]);
    const again = await stoppedBy('continue', {});
    assert.deepStrictEqual(again.hitBreakpointIds, [bps.body.breakpoints[1].id]);
    assert.deepStrictEqual((await top())[0], ['process_packet', 178]);
    const exited = dc.waitForEvent('exited');
    await dc.continueRequest({ threadId: 1 });
    assert.strictEqual((await exited).body.exitCode, 7);
    const result = outputs.map((o) => o.output).find((t) => t.startsWith('packet 1: '));
    assert.match(result, /^packet 1: \[program exited: retval 7 \(TC_ACT_REDIRECT\)/);
  });
});
