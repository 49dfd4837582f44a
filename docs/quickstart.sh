#!/usr/bin/env bash
# The quick start (docs/quickstart.md and quickstart.zh.md): a new Django project applies for
# a refund at the local sandbox gateway and receives its notification. The pages show each
# section below as one step; tests/example/test_quickstart.py runs this whole file in an empty
# folder. Run it yourself the same way:
#
#     HSQ_REFUNDS_PACKAGE=/path/to/hsq-refunds bash quickstart.sh
#
# The lines outside the sections wait for what a person sees before going on.
set -euo pipefail

# until_ok COMMAND...: run COMMAND until it succeeds, for 60 seconds at most.
until_ok() {
    for _ in $(seq 300); do
        "$@" 2>/dev/null && return 0
        sleep 0.2
    done
    echo "quickstart.sh: still failing after 60 s: $*" >&2
    return 1
}

# listening PORT: whether a server accepts connections on 127.0.0.1:PORT.
listening() {
    python -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$1"
}

# --8<-- [start:ports]
SHOP_PORT=${SHOP_PORT:-8000}         # runserver: your shop
SANDBOX_PORT=${SANDBOX_PORT:-8765}   # the sandbox gateway
# --8<-- [end:ports]

# --8<-- [start:install]
python3 -m venv venv
. venv/bin/activate
pip install "$HSQ_REFUNDS_PACKAGE"
django-admin startproject shop
cd shop
# --8<-- [end:install]

# --8<-- [start:settings]
python -m hsq_refunds.sandbox init hsq-sandbox \
    --print-settings "http://127.0.0.1:$SANDBOX_PORT/api/acquiring" \
    | sed -n '/^HSQ_REFUNDS = /,$p' >> shop/settings.py
cat >> shop/settings.py <<EOF
INSTALLED_APPS += ["hsq_refunds"]
TIME_ZONE = "Asia/Shanghai"
HSQ_REFUNDS["NOTIFY_URL"] = "http://127.0.0.1:$SHOP_PORT/hsq/refund-notify/"
EOF
cat >> shop/urls.py <<'EOF'
from django.urls import include
urlpatterns += [path("hsq/", include("hsq_refunds.urls"))]
EOF
# --8<-- [end:settings]

# --8<-- [start:migrate]
python manage.py migrate
python manage.py check
# --8<-- [end:migrate]

# --8<-- [start:serve]
python -m hsq_refunds.sandbox serve --keys hsq-sandbox --port "$SANDBOX_PORT" > sandbox.log 2>&1 &
SANDBOX_PID=$!
python manage.py runserver "$SHOP_PORT" > runserver.log 2>&1 &
SHOP_PID=$!
# --8<-- [end:serve]
until_ok listening "$SANDBOX_PORT"
until_ok listening "$SHOP_PORT"

# --8<-- [start:apply]
python manage.py shell -v 0 -c '
from hsq_refunds.models import Refund
refund = Refund.objects.apply(
    orig_trans_no="PO20261201000001", orig_amount=5000, amount=1234, reason="七天无理由退货"
)
print(refund.trans_no, refund.status, refund.application)'
# --8<-- [end:apply]
until_ok grep -qE "notify transNo=RF[0-9]+ SUCCESS attempt [0-9]+: acknowledged HTTP 200" sandbox.log

# --8<-- [start:notified]
python manage.py shell -v 0 -c '
from hsq_refunds.models import Refund
refund = Refund.objects.get()
print(refund.trans_no, refund.status, "by", refund.final_source)'
grep "notify transNo" sandbox.log
# --8<-- [end:notified]

# --8<-- [start:health]
python manage.py sync_refunds
python manage.py hsq_refunds_health
# --8<-- [end:health]

# --8<-- [start:stop]
kill $SANDBOX_PID $SHOP_PID
# --8<-- [end:stop]
