// Sends traces, metrics and logs to skiff-telemetry's OTLP/HTTP port with the
// real OpenTelemetry JS SDK, once with the protobuf exporters (service
// "js-proto") and once with the JSON exporters (service "js-json").
// Usage: node send.js http://127.0.0.1:PORT
// Prints {"js-proto": {"traceId": ...}, "js-json": {...}} on stdout.
'use strict';
const api = require('@opentelemetry/api');
const { SeverityNumber } = require('@opentelemetry/api-logs');
const { Resource } = require('@opentelemetry/resources');
const { NodeTracerProvider } = require('@opentelemetry/sdk-trace-node');
const { SimpleSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const { MeterProvider, PeriodicExportingMetricReader } = require('@opentelemetry/sdk-metrics');
const { LoggerProvider, SimpleLogRecordProcessor } = require('@opentelemetry/sdk-logs');

const exporters = {
  'js-proto': {
    trace: require('@opentelemetry/exporter-trace-otlp-proto').OTLPTraceExporter,
    metric: require('@opentelemetry/exporter-metrics-otlp-proto').OTLPMetricExporter,
    log: require('@opentelemetry/exporter-logs-otlp-proto').OTLPLogExporter,
  },
  'js-json': {
    trace: require('@opentelemetry/exporter-trace-otlp-http').OTLPTraceExporter,
    metric: require('@opentelemetry/exporter-metrics-otlp-http').OTLPMetricExporter,
    log: require('@opentelemetry/exporter-logs-otlp-http').OTLPLogExporter,
  },
};

api.diag.setLogger(new api.DiagConsoleLogger(), api.DiagLogLevel.WARN);

async function send(base, service, ex) {
  const resource = new Resource({
    'service.name': service,
    'service.instance.id': service + '-1',
    'deployment.environment': 'test',
  });

  // traces: a server span with a child client span, attributes, an event, an error status
  const tp = new NodeTracerProvider({ resource });
  tp.addSpanProcessor(new SimpleSpanProcessor(new ex.trace({ url: base + '/v1/traces' })));
  const tracer = tp.getTracer('skiff-otel-js-test', '1.0.0');
  const parent = tracer.startSpan('GET /checkout', {
    kind: api.SpanKind.SERVER,
    attributes: { 'http.method': 'GET', 'http.status_code': 200, 'cart.items': 3, 'cart.gift': true },
  });
  const pctx = api.trace.setSpan(api.context.active(), parent);
  const child = tracer.startSpan('charge card', { kind: api.SpanKind.CLIENT, attributes: { 'payment.amount': 12.5 } }, pctx);
  child.addEvent('retrying', { attempt: 2 });
  child.setStatus({ code: api.SpanStatusCode.ERROR, message: 'card declined' });
  child.end();
  parent.setStatus({ code: api.SpanStatusCode.OK });
  parent.end();
  await tp.forceFlush();
  await tp.shutdown();
  const traceId = parent.spanContext().traceId;

  // metrics: a counter, a histogram, an observable gauge (cumulative temporality, the default)
  const reader = new PeriodicExportingMetricReader({
    exporter: new ex.metric({ url: base + '/v1/metrics' }),
    exportIntervalMillis: 3600000,
  });
  const mp = new MeterProvider({ resource, readers: [reader] });
  const meter = mp.getMeter('skiff-otel-js-test');
  const orders = meter.createCounter('orders.placed', { description: 'orders' });
  orders.add(3, { region: 'eu' });
  orders.add(4, { region: 'eu' });
  orders.add(5, { region: 'us' });
  const lat = meter.createHistogram('checkout.latency', { unit: 'ms', advice: { explicitBucketBoundaries: [10, 50, 100, 500] } });
  for (const v of [5, 20, 30, 70, 80, 90, 200, 600]) lat.record(v, { route: '/checkout' });
  const g = meter.createObservableGauge('queue.size');
  g.addCallback((r) => r.observe(17, { queue: 'orders' }));
  await mp.forceFlush();
  await mp.shutdown();

  // logs: one correlated with the trace, one plain
  const lp = new LoggerProvider({ resource });
  lp.addLogRecordProcessor(new SimpleLogRecordProcessor(new ex.log({ url: base + '/v1/logs' })));
  const logger = lp.getLogger('skiff-otel-js-test');
  logger.emit({
    severityNumber: SeverityNumber.ERROR,
    severityText: 'ERROR',
    body: 'payment failed for order 42 via ' + service,
    attributes: { 'order.id': 42 },
    context: pctx,
  });
  logger.emit({ severityNumber: SeverityNumber.INFO, severityText: 'INFO', body: 'checkout done via ' + service });
  await lp.forceFlush();
  await lp.shutdown();
  return { traceId, parentSpanId: parent.spanContext().spanId, childSpanId: child.spanContext().spanId };
}

(async () => {
  const base = process.argv[2];
  const out = {};
  for (const [service, ex] of Object.entries(exporters)) out[service] = await send(base, service, ex);
  process.stdout.write(JSON.stringify(out) + '\n');
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
