import { KubeConfig } from '@kubernetes/client-node';
import { pino } from 'pino';
import { type Operator, type OperatorConfig, startOperator } from '../src/controller.ts';

/** The agent image the test operator gives meshes that name none (no image is pulled in tests). */
export const TEST_AGENT_IMAGE = 'registry.example/edgemesh:test';

/**
 * The operator, in this process, against the API server a kubeconfig names (the fake's or a real one): fast leader election (3 s lease,
 * 200 ms retries), probes and the issuance endpoint on free loopback ports, agent image
 * TEST_AGENT_IMAGE, logs off unless TEST_LOG names a level.
 */
export function startTestOperator(
  api: { kubeconfig: string },
  overrides: Partial<OperatorConfig> = {},
): Promise<Operator> {
  const kc = new KubeConfig();
  kc.loadFromString(api.kubeconfig);
  return startOperator(
    kc,
    {
      identity: 'test',
      leaseNamespace: 'edgemesh-system',
      leaseName: 'edgemesh-operator',
      leaseDurationMs: 3000,
      renewDeadlineMs: 2000,
      retryPeriodMs: 200,
      workers: 2,
      resyncMs: 0,
      probeHost: '127.0.0.1',
      probePort: 0,
      issuer: {
        url: 'https://edgemesh-operator.edgemesh-system.svc:7443',
        host: '127.0.0.1',
        port: 0,
        secretName: 'edgemesh-operator-issuer-tls',
      },
      agentImage: { image: TEST_AGENT_IMAGE },
      ...overrides,
    },
    pino({ level: process.env.TEST_LOG ?? 'silent' }),
  );
}
