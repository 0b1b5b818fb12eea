#!/usr/bin/env bash
# deploy_gcr.sh: build codeexec, push it to Artifact Registry and deploy a Cloud Run revision.
#
#   bash infra/codeexec/deploy_gcr.sh             # do it
#   bash infra/codeexec/deploy_gcr.sh --dry-run   # print every command instead (runs none)
#
# Edit the variables below (or set them in the environment; the environment wins).
# What it does, idempotently:
#   1. enables the Cloud Run, Artifact Registry, Cloud Build and Secret Manager APIs;
#   2. creates the Artifact Registry repository REPO, the GCS bucket CODEEXEC_GCS_BUCKET and
#      a service account for the service when they are missing;
#   3. stores CODEEXEC_API_KEY in Secret Manager (secret "${SERVICE_NAME}-api-key"; a new
#      version each time the key is given) and lets only that service account read it: the
#      key reaches the container as a secret reference, never as a plain env var value;
#   4. builds the image (Cloud Build by default; BUILDER=docker builds and pushes locally);
#   5. deploys it with the second-generation execution environment (the sandbox needs full
#      Linux system calls: namespaces, mount, cgroups) and CODEEXEC_STORAGE_BACKEND=gcs;
#   6. prints the service URL and the lines for LibreChat's .env.
set -euo pipefail

# ---- edit these ----------------------------------------------------------------------------
PROJECT_ID=${PROJECT_ID:-}                     # your GCP project ID
REGION=${REGION:-europe-west1}                 # Cloud Run and Artifact Registry region
SERVICE_NAME=${SERVICE_NAME:-codeexec}         # Cloud Run service name
REPO=${REPO:-codeexec}                         # Artifact Registry (docker) repository name
CODEEXEC_API_KEY=${CODEEXEC_API_KEY:-}         # the same secret as LIBRECHAT_CODE_API_KEY in LibreChat's .env
CODEEXEC_GCS_BUCKET=${CODEEXEC_GCS_BUCKET:-}   # GCS bucket for session files (storage backend gcs)
# ---- optional ------------------------------------------------------------------------------
STORAGE_BACKEND=${STORAGE_BACKEND:-gcs}        # gcs, or local (files on the instance's in-memory disk, lost on restart)
BUILDER=${BUILDER:-cloudbuild}                 # cloudbuild (no local Docker needed) or docker
IMAGE_TAG=${IMAGE_TAG:-}                       # default: the git commit, else a timestamp
SERVICE_ACCOUNT=${SERVICE_ACCOUNT:-}           # default: ${SERVICE_NAME}-run@${PROJECT_ID}.iam.gserviceaccount.com
SECRET_NAME=${SECRET_NAME:-}                   # default: ${SERVICE_NAME}-api-key
CPU=${CPU:-2}                                  # vCPUs per instance
MEMORY=${MEMORY:-8Gi}                          # per instance: CONCURRENCY runs x 2 GiB + their tmpfs + the server
RUN_CONCURRENCY=${RUN_CONCURRENCY:-2}          # executions at once per instance (CODEEXEC_MAX_CONCURRENCY)
MAX_INSTANCES=${MAX_INSTANCES:-10}
MIN_INSTANCES=${MIN_INSTANCES:-0}
ALLOW_UNAUTHENTICATED=${ALLOW_UNAUTHENTICATED:-true} # LibreChat authenticates with the API key, not Google IAM
# --------------------------------------------------------------------------------------------

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
dry_run=0

usage() {
	sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

die() {
	printf 'deploy_gcr: error: %s\n' "$*" >&2
	exit 1
}
log() { printf 'deploy_gcr: %s\n' "$*" >&2; }

for arg in "$@"; do
	case $arg in
	--dry-run | -n) dry_run=1 ;;
	-h | --help)
		usage
		exit 0
		;;
	*) die "unknown argument: $arg (try --help)" ;;
	esac
done

# ---- checks --------------------------------------------------------------------------------
need_tool() {
	command -v "$1" >/dev/null 2>&1 || die "$1 is not installed or not on PATH. $2"
}
need_tool gcloud "Install the Google Cloud CLI: https://cloud.google.com/sdk/docs/install, then run 'gcloud auth login'."
case $BUILDER in
cloudbuild) ;;
docker) need_tool docker "BUILDER=docker builds the image locally; install Docker or use BUILDER=cloudbuild." ;;
*) die "BUILDER must be cloudbuild or docker, not '$BUILDER'" ;;
esac

missing=()
for v in PROJECT_ID REGION SERVICE_NAME REPO; do
	[[ -n ${!v} ]] || missing+=("$v")
done
case $STORAGE_BACKEND in
gcs) [[ -n $CODEEXEC_GCS_BUCKET ]] || missing+=(CODEEXEC_GCS_BUCKET) ;;
local) ;;
*) die "STORAGE_BACKEND must be gcs or local, not '$STORAGE_BACKEND'" ;;
esac
((${#missing[@]} == 0)) || die "set ${missing[*]} (edit the top of $0 or export them)"
[[ $SERVICE_NAME =~ ^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$ ]] ||
	die "SERVICE_NAME '$SERVICE_NAME' is not a valid Cloud Run service name (lowercase letters, digits, '-')"
[[ $REPO =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] || die "REPO '$REPO' is not a valid Artifact Registry repository name"
[[ -f $root/Dockerfile ]] || die "no Dockerfile at $root (run the script from the codeexec sources)"

SECRET_NAME=${SECRET_NAME:-${SERVICE_NAME}-api-key}
sa_id=${SERVICE_NAME}-run
sa_id=${sa_id:0:30}
SERVICE_ACCOUNT=${SERVICE_ACCOUNT:-${sa_id}@${PROJECT_ID}.iam.gserviceaccount.com}
if [[ -z $IMAGE_TAG ]]; then
	IMAGE_TAG=$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || date -u +%Y%m%d%H%M%S)
fi
image="${REGION}-docker.pkg.dev/${PROJECT_ID}/${REPO}/${SERVICE_NAME}:${IMAGE_TAG}"
gc=(gcloud --project="$PROJECT_ID" --quiet)

# ---- helpers -------------------------------------------------------------------------------
show() { printf '+ %s\n' "$(printf '%q ' "$@" | sed 's/ $//')"; }

# run CMD...: run it (echoed), or only print it with --dry-run.
run() {
	show "$@"
	((dry_run)) || "$@"
}

# ensure WHAT -- PROBE... -- CREATE...: run CREATE unless PROBE succeeds.
ensure() {
	local what=$1 probe=() create=()
	shift 2
	while [[ $1 != -- ]]; do
		probe+=("$1")
		shift
	done
	shift
	create=("$@")
	if ((dry_run)); then
		printf '+ %s || %s\n' "$(printf '%q ' "${probe[@]}" | sed 's/ $//')" "$(printf '%q ' "${create[@]}" | sed 's/ $//')"
		return 0
	fi
	if "${probe[@]}" >/dev/null 2>&1; then
		log "$what exists"
	else
		log "creating $what"
		run "${create[@]}"
	fi
}

# ---- 1. APIs -------------------------------------------------------------------------------
log "project $PROJECT_ID, region $REGION, service $SERVICE_NAME, image $image"
run "${gc[@]}" services enable run.googleapis.com artifactregistry.googleapis.com \
	cloudbuild.googleapis.com secretmanager.googleapis.com iam.googleapis.com storage.googleapis.com

# ---- 2. repository, bucket, service account -----------------------------------------------
ensure "Artifact Registry repository $REPO" -- \
	"${gc[@]}" artifacts repositories describe "$REPO" --location="$REGION" -- \
	"${gc[@]}" artifacts repositories create "$REPO" --location="$REGION" \
	--repository-format=docker --description="codeexec images"

ensure "service account $SERVICE_ACCOUNT" -- \
	"${gc[@]}" iam service-accounts describe "$SERVICE_ACCOUNT" -- \
	"${gc[@]}" iam service-accounts create "${SERVICE_ACCOUNT%%@*}" \
	--display-name="codeexec Cloud Run service ($SERVICE_NAME)"

if [[ $STORAGE_BACKEND == gcs ]]; then
	ensure "bucket gs://$CODEEXEC_GCS_BUCKET" -- \
		"${gc[@]}" storage buckets describe "gs://$CODEEXEC_GCS_BUCKET" -- \
		"${gc[@]}" storage buckets create "gs://$CODEEXEC_GCS_BUCKET" --location="$REGION" \
		--uniform-bucket-level-access --public-access-prevention
	# The service reads and writes objects of this bucket only.
	run "${gc[@]}" storage buckets add-iam-policy-binding "gs://$CODEEXEC_GCS_BUCKET" \
		--member="serviceAccount:$SERVICE_ACCOUNT" --role=roles/storage.objectAdmin
fi

# ---- 3. the API key in Secret Manager ------------------------------------------------------
ensure "secret $SECRET_NAME" -- \
	"${gc[@]}" secrets describe "$SECRET_NAME" -- \
	"${gc[@]}" secrets create "$SECRET_NAME" --replication-policy=automatic
if [[ -n $CODEEXEC_API_KEY ]]; then
	# From stdin: the key never appears in a command line, a log or the process list.
	# shellcheck disable=SC2016 # printed literally: the dry run shows the variable, not the key
	printf '+ printf %%s "$CODEEXEC_API_KEY" | %s\n' \
		"$(printf '%q ' "${gc[@]}" secrets versions add "$SECRET_NAME" --data-file=- | sed 's/ $//')"
	if ((!dry_run)); then
		printf %s "$CODEEXEC_API_KEY" | "${gc[@]}" secrets versions add "$SECRET_NAME" --data-file=- >/dev/null
	fi
elif ((!dry_run)) && ! "${gc[@]}" secrets versions describe latest --secret="$SECRET_NAME" >/dev/null 2>&1; then
	die "secret $SECRET_NAME has no version yet: set CODEEXEC_API_KEY (the value of LIBRECHAT_CODE_API_KEY)"
else
	log "CODEEXEC_API_KEY not set: keeping the latest version of secret $SECRET_NAME"
fi
run "${gc[@]}" secrets add-iam-policy-binding "$SECRET_NAME" \
	--member="serviceAccount:$SERVICE_ACCOUNT" --role=roles/secretmanager.secretAccessor

# ---- 4. build and push ---------------------------------------------------------------------
case $BUILDER in
cloudbuild)
	# The image builds in ~15 minutes on a small machine (Debian packages of 13 toolchains).
	run "${gc[@]}" builds submit "$root" --tag="$image" --timeout=3600s --machine-type=e2-highcpu-8
	;;
docker)
	run docker build --platform=linux/amd64 -t "$image" "$root"
	run "${gc[@]}" auth configure-docker "${REGION}-docker.pkg.dev"
	run docker push "$image"
	;;
esac

# ---- 5. deploy -----------------------------------------------------------------------------
env_vars="CODEEXEC_STORAGE_BACKEND=$STORAGE_BACKEND"
if [[ $STORAGE_BACKEND == gcs ]]; then
	env_vars+=",CODEEXEC_GCS_BUCKET=$CODEEXEC_GCS_BUCKET"
fi
env_vars+=",CODEEXEC_MAX_MEMORY_MB=2048,CODEEXEC_MAX_EXECUTION_SECONDS=120,CODEEXEC_MAX_CPU_SECS=120"
env_vars+=",CODEEXEC_MAX_CONCURRENCY=$RUN_CONCURRENCY,CODEEXEC_DISABLE_NETWORK=true"
auth_flag=--no-allow-unauthenticated
[[ $ALLOW_UNAUTHENTICATED == true ]] && auth_flag=--allow-unauthenticated
# PORT is Cloud Run's (8080), which codeexec honours; CODEEXEC_PORT is left unset.
run "${gc[@]}" run deploy "$SERVICE_NAME" \
	--region="$REGION" \
	--image="$image" \
	--execution-environment=gen2 \
	--service-account="$SERVICE_ACCOUNT" \
	--set-env-vars="$env_vars" \
	--set-secrets="CODEEXEC_API_KEY=${SECRET_NAME}:latest" \
	--port=8080 \
	--cpu="$CPU" \
	--memory="$MEMORY" \
	--concurrency=$((RUN_CONCURRENCY * 4)) \
	--timeout=300 \
	--min-instances="$MIN_INSTANCES" \
	--max-instances="$MAX_INSTANCES" \
	--cpu-boost \
	"$auth_flag"

# ---- 6. what to put in LibreChat's .env ----------------------------------------------------
url_cmd=("${gc[@]}" run services describe "$SERVICE_NAME" --region="$REGION" --format='get(status.url)')
if ((dry_run)); then
	show "${url_cmd[@]}"
	url='https://<your-cloud-run-url>'
else
	url=$("${url_cmd[@]}")
	[[ -n $url ]] || die "deployed, but 'gcloud run services describe' printed no URL"
	if command -v curl >/dev/null 2>&1; then
		if curl -fsS --max-time 30 "$url/health" >/dev/null; then
			log "health check ok: $url/health"
		else
			log "warning: $url/health did not answer 200 yet; see: gcloud run services logs read $SERVICE_NAME --project=$PROJECT_ID --region=$REGION"
		fi
	fi
fi
done_what="Deployed"
((dry_run)) && done_what="Dry run: would deploy"
cat <<EOF

$done_what $SERVICE_NAME ($image).
In LibreChat's .env:

  LIBRECHAT_CODE_BASEURL=$url
  LIBRECHAT_CODE_API_KEY=<the value of CODEEXEC_API_KEY>

EOF
