# EdgeMesh: one image, two entry points.
#   agent (the default):  docker run IMAGE --node-id n1 --zone z1 --region r1 --http.host 0.0.0.0
#                           --store.dir /tmp/em --security.mtls false --access.anonymous all   (a lone lab agent; docs/deploy.md)
#   operator:             command [node, --max-semi-space-size=8, dist/operator.mjs] (the chart does this)
# Build:  docker build -t edgemesh:dev .
#         (labels: --build-arg VERSION=1.2.3 --build-arg REVISION=$(git rev-parse HEAD) --build-arg SOURCE=https://...)
# Behind a TLS-intercepting proxy, give npm that proxy's CA (used in the build stage only):
#         docker build --build-arg NPM_EXTRA_CA="$(cat proxy-ca.pem)" -t edgemesh:dev .
# docs/deploy.md has the image's size, its idle memory and why it is built this way.

# ---- build: install the locked dependencies, bundle agent and operator (scripts/build.ts) ----
FROM node:24-bookworm-slim AS build
WORKDIR /src
# Every workspace's manifest first, so this layer is reused until the lock file changes.
COPY package.json package-lock.json ./
COPY contracts/package.json contracts/
COPY identity/package.json identity/
COPY telemetry/package.json telemetry/
COPY agent/package.json agent/
COPY operator/package.json operator/
COPY charts/package.json charts/
COPY e2e/package.json e2e/
COPY bench/package.json bench/
ARG NPM_EXTRA_CA=""
RUN if [ -n "$NPM_EXTRA_CA" ]; then printf '%s\n' "$NPM_EXTRA_CA" >/tmp/extra-ca.pem; export NODE_EXTRA_CA_CERTS=/tmp/extra-ca.pem; fi \
 && npm ci --include-workspace-root -w contracts -w identity -w telemetry -w agent -w operator --ignore-scripts --no-audit --no-fund
COPY scripts/build.ts scripts/
COPY contracts/src contracts/src
COPY identity/src identity/src
COPY telemetry/src telemetry/src
COPY agent/proto agent/proto
COPY agent/src agent/src
COPY operator/src operator/src
RUN node scripts/build.ts /out

# ---- runtime: the official base plus the bundles; no node_modules, no npm install, no root ----
FROM node:24-bookworm-slim
# OCI annotations (.github/workflows/release.yaml passes each): the version released, the source
# revision built (the e2e harness passes a unique one, to know the image is its own), where the
# source lives, and its licence.
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=""
ARG LICENSES=Apache-2.0
LABEL org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$REVISION" \
      org.opencontainers.image.source="$SOURCE" \
      org.opencontainers.image.licenses="$LICENSES" \
      org.opencontainers.image.title="edgemesh" \
      org.opencontainers.image.description="EdgeMesh agent and operator: a Kubernetes-native, geo-aware peer-to-peer edge mesh"
WORKDIR /app
COPY --from=build /out ./dist
# glibc's per-thread malloc arenas hold memory an idle agent never gives back; two are plenty. Blocks
# of 512 KiB and more (chunk Buffers among them) from mmap, so freeing one normally gives it back
# (agent/src/node-flags.ts says why).
ENV NODE_ENV=production MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=524288 EDGEMESH_REVISION=$REVISION
# The nonroot uid/gid of distroless images; the chart and the operator run as it too.
USER 65532:65532
# The agent's HTTP API (/v1, /metrics, /healthz) and its gRPC data plane.
EXPOSE 7480 7481
# V8 flags of agent/src/node-flags.ts: a small young generation, one V8 worker thread, optimizing
# compilations one at a time on the main thread, and no V8 memory reducer (the agent gives memory
# back itself when quiet).
ENTRYPOINT ["node", "--max-semi-space-size=1", "--v8-pool-size=1", "--no-concurrent-recompilation", "--no-memory-reducer", "dist/agent.mjs"]
