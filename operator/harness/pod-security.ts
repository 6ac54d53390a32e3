/**
 * The Pod Security Standards' baseline and restricted levels as code, for tests: the controls listed
 * at https://kubernetes.io/docs/concepts/security/pod-security-standards/ (Kubernetes 1.25 and
 * later, Linux pods), each a function that names what in a pod spec breaks it. `level` says the
 * most restrictive level a pod passes. Fields the operator never writes (AppArmor, SELinux, /proc
 * mount, sysctls, Windows host processes) are checked too, so a pod template that started writing
 * them would be judged.
 */

type Caps = { add?: string[]; drop?: string[] };
type SecurityContext = {
  privileged?: boolean;
  allowPrivilegeEscalation?: boolean;
  runAsNonRoot?: boolean;
  runAsUser?: number;
  capabilities?: Caps;
  seccompProfile?: { type?: string };
  appArmorProfile?: { type?: string };
  seLinuxOptions?: { type?: string; user?: string; role?: string };
  procMount?: string;
  windowsOptions?: { hostProcess?: boolean };
};
type Container = {
  name: string;
  ports?: { hostPort?: number }[];
  securityContext?: SecurityContext;
};
export type PodSpec = {
  hostNetwork?: boolean;
  hostPID?: boolean;
  hostIPC?: boolean;
  securityContext?: SecurityContext & { sysctls?: { name: string }[] };
  containers: Container[];
  initContainers?: Container[];
  volumes?: Record<string, unknown>[];
};

export type Level = 'privileged' | 'baseline' | 'restricted';

/** Capabilities baseline lets a container add (the container runtime's default set). */
const BASELINE_CAPABILITIES = new Set([
  'AUDIT_WRITE',
  'CHOWN',
  'DAC_OVERRIDE',
  'FOWNER',
  'FSETID',
  'KILL',
  'MKNOD',
  'NET_BIND_SERVICE',
  'SETFCAP',
  'SETGID',
  'SETPCAP',
  'SETUID',
  'SYS_CHROOT',
]);
const SAFE_SYSCTLS = new Set([
  'kernel.shm_rmid_forced',
  'net.ipv4.ip_local_port_range',
  'net.ipv4.ip_unprivileged_port_start',
  'net.ipv4.tcp_syncookies',
  'net.ipv4.ping_group_range',
  'net.ipv4.ip_local_reserved_ports',
  'net.ipv4.tcp_keepalive_time',
  'net.ipv4.tcp_fin_timeout',
  'net.ipv4.tcp_keepalive_intvl',
  'net.ipv4.tcp_keepalive_probes',
]);
/** The volume types restricted allows; every other (hostPath, nfs, ...) is refused. */
const RESTRICTED_VOLUMES = new Set([
  'configMap',
  'csi',
  'downwardAPI',
  'emptyDir',
  'ephemeral',
  'persistentVolumeClaim',
  'projected',
  'secret',
]);
const SELINUX_TYPES = new Set([
  '',
  'container_t',
  'container_init_t',
  'container_kvm_t',
  'container_engine_t',
]);

const containersOf = (pod: PodSpec) => [...(pod.initContainers ?? []), ...pod.containers];
const contexts = (pod: PodSpec) => [
  { where: 'pod', sc: pod.securityContext },
  ...containersOf(pod).map((c) => ({ where: `container ${c.name}`, sc: c.securityContext })),
];

type Control = (pod: PodSpec) => string[];

/** Baseline: no known privilege escalation. */
export const BASELINE_CONTROLS: Record<string, Control> = {
  HostProcess: (pod) =>
    contexts(pod)
      .filter(({ sc }) => sc?.windowsOptions?.hostProcess === true)
      .map(({ where }) => `${where}: windowsOptions.hostProcess`),
  'Host Namespaces': (pod) =>
    (['hostNetwork', 'hostPID', 'hostIPC'] as const).filter((f) => pod[f] === true).map((f) => `${f}: true`),
  'Privileged Containers': (pod) =>
    containersOf(pod)
      .filter((c) => c.securityContext?.privileged === true)
      .map((c) => `container ${c.name}: privileged`),
  Capabilities: (pod) =>
    containersOf(pod).flatMap((c) =>
      (c.securityContext?.capabilities?.add ?? [])
        .filter((cap) => !BASELINE_CAPABILITIES.has(cap))
        .map((cap) => `container ${c.name}: adds ${cap}`),
    ),
  'HostPath Volumes': (pod) =>
    (pod.volumes ?? []).filter((v) => 'hostPath' in v).map((v) => `volume ${String(v.name)}: hostPath`),
  // The built-in admission knows no list of allowed host ports: any non-zero one is refused.
  'Host Ports': (pod) =>
    containersOf(pod).flatMap((c) =>
      (c.ports ?? [])
        .filter((p) => (p.hostPort ?? 0) !== 0)
        .map((p) => `container ${c.name}: hostPort ${p.hostPort}`),
    ),
  AppArmor: (pod) =>
    contexts(pod)
      .filter(({ sc }) => sc?.appArmorProfile?.type === 'Unconfined')
      .map(({ where }) => `${where}: AppArmor Unconfined`),
  SELinux: (pod) =>
    contexts(pod).flatMap(({ where, sc }) => {
      const se = sc?.seLinuxOptions;
      if (!se) return [];
      return [
        ...(se.type !== undefined && !SELINUX_TYPES.has(se.type)
          ? [`${where}: SELinux type ${se.type}`]
          : []),
        ...(se.user !== undefined || se.role !== undefined ? [`${where}: SELinux user or role`] : []),
      ];
    }),
  '/proc Mount Type': (pod) =>
    containersOf(pod)
      .filter((c) => (c.securityContext?.procMount ?? 'Default') !== 'Default')
      .map((c) => `container ${c.name}: procMount ${c.securityContext?.procMount}`),
  Seccomp: (pod) =>
    contexts(pod)
      .filter(({ sc }) => sc?.seccompProfile?.type === 'Unconfined')
      .map(({ where }) => `${where}: seccomp Unconfined`),
  Sysctls: (pod) =>
    (pod.securityContext?.sysctls ?? [])
      .filter((s) => !SAFE_SYSCTLS.has(s.name))
      .map((s) => `sysctl ${s.name}`),
};

/** Restricted: baseline, plus current hardening practice. */
export const RESTRICTED_CONTROLS: Record<string, Control> = {
  'Volume Types': (pod) =>
    (pod.volumes ?? []).flatMap((v) =>
      Object.keys(v)
        .filter((k) => k !== 'name' && !RESTRICTED_VOLUMES.has(k))
        .map((k) => `volume ${String(v.name)}: ${k}`),
    ),
  'Privilege Escalation': (pod) =>
    containersOf(pod)
      .filter((c) => c.securityContext?.allowPrivilegeEscalation !== false)
      .map((c) => `container ${c.name}: allowPrivilegeEscalation is not false`),
  // Set on the pod, each container may leave it unset; a container's false wins over the pod's true.
  'Running as Non-root': (pod) =>
    containersOf(pod)
      .filter((c) => (c.securityContext?.runAsNonRoot ?? pod.securityContext?.runAsNonRoot) !== true)
      .map((c) => `container ${c.name}: runAsNonRoot is not true`),
  'Running as Non-root user': (pod) =>
    contexts(pod)
      .filter(({ sc }) => sc?.runAsUser === 0)
      .map(({ where }) => `${where}: runAsUser 0`),
  'Seccomp (restricted)': (pod) =>
    containersOf(pod)
      .filter((c) => {
        const type = c.securityContext?.seccompProfile?.type ?? pod.securityContext?.seccompProfile?.type;
        return type !== 'RuntimeDefault' && type !== 'Localhost';
      })
      .map((c) => `container ${c.name}: seccomp is neither RuntimeDefault nor Localhost`),
  'Capabilities (restricted)': (pod) =>
    containersOf(pod).flatMap((c) => {
      const caps = c.securityContext?.capabilities;
      return [
        ...(caps?.drop?.includes('ALL') ? [] : [`container ${c.name}: does not drop ALL`]),
        ...(caps?.add ?? [])
          .filter((cap) => cap !== 'NET_BIND_SERVICE')
          .map((cap) => `container ${c.name}: adds ${cap}`),
      ];
    }),
};

const violations = (controls: Record<string, Control>, pod: PodSpec) =>
  Object.entries(controls).flatMap(([control, check]) => check(pod).map((v) => `${control}: ${v}`));

/** What in `pod` breaks the level (empty: it passes); restricted includes baseline. */
export function podSecurityViolations(pod: PodSpec, level: Exclude<Level, 'privileged'>): string[] {
  return [
    ...violations(BASELINE_CONTROLS, pod),
    ...(level === 'restricted' ? violations(RESTRICTED_CONTROLS, pod) : []),
  ];
}

/** The most restrictive level the pod passes. */
export function podSecurityLevel(pod: PodSpec): Level {
  if (podSecurityViolations(pod, 'restricted').length === 0) return 'restricted';
  if (podSecurityViolations(pod, 'baseline').length === 0) return 'baseline';
  return 'privileged';
}
