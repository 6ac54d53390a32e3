import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { serviceResource } from './resource.ts';

describe('a process resource', () => {
  const saved = { ...process.env };
  afterEach(() => {
    for (const key of ['OTEL_RESOURCE_ATTRIBUTES', 'OTEL_SERVICE_NAME'])
      if (saved[key] === undefined) delete process.env[key];
      else process.env[key] = saved[key];
  });

  it('has what the process says of itself, its version and host', async () => {
    delete process.env.OTEL_RESOURCE_ATTRIBUTES;
    delete process.env.OTEL_SERVICE_NAME;
    const { attributes } = await serviceResource(
      { 'service.name': 'edgemesh-agent', 'service.instance.id': 'n1' },
      { version: '1.2.3', revision: 'abc' },
    );
    assert.equal(attributes['service.name'], 'edgemesh-agent');
    assert.equal(attributes['service.instance.id'], 'n1');
    assert.equal(attributes['service.version'], '1.2.3');
    assert.equal(typeof attributes['host.name'], 'string');
  });

  it('takes OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME over its own', async () => {
    process.env.OTEL_RESOURCE_ATTRIBUTES = 'k8s.namespace.name=shop,service.instance.id=pod-7';
    process.env.OTEL_SERVICE_NAME = 'edge-cache';
    const { attributes } = await serviceResource({
      'service.name': 'edgemesh-agent',
      'service.instance.id': 'n1',
    });
    assert.equal(attributes['k8s.namespace.name'], 'shop');
    assert.equal(attributes['service.instance.id'], 'pod-7');
    assert.equal(attributes['service.name'], 'edge-cache');
  });
});
