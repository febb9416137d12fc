"""MQTT ingestion benchmark: readings a second that become queryable, against a bare client.

Everything runs in one invocation, on one broker (the harness Mosquitto by default), on loopback:

1. **Bare baseline.** For each QoS, a bare aiomqtt subscriber process only counts messages
   while the publishers publish ``--messages`` readings as fast as they can. It speaks the
   platform's MQTT version (5 unless ``--platform-env IOT_MQTT__PROTOCOL=3.1.1``; see
   ``--bare-protocol``), on MQTT 5 in its own ``$share`` group as the platform does, subscribed
   at the phase's QoS. Rate = messages / (last one received - first publish). The platform is
   not running yet, so nothing else consumes these messages (platform and bare never overlap).
2. **Platform.** ``iot-platform serve`` runs as a separate process in a fresh temp dir: SQLite
   event store, embedded time-series store (or ``--store influxdb``: the harness InfluxDB),
   the broker above, a client id, shared-subscription group and session (expiring 120 s after
   the run) of its own, ``api.log_level=warning`` (no access log), and a fresh admin API key
   (``security.admin_api_key``, unless ``--platform-env IOT_SECURITY__ADMIN_API_KEY=...`` gives
   one) that every REST, /metrics and SSE request carries as ``Authorization: Bearer``.
   ``--devices`` devices plus ``--probes`` probe devices are registered with
   ``POST /api/devices``, concurrently; that is timed and printed on its own and is not part
   of the ingest figures.
3. **Activation.** Every device publishes one reading. The first reading of a device appends
   ``DeviceActivated`` to the event store; timed and printed on its own, so that the phases
   below measure ingestion by active devices.
4. **Saturated phases** (``--qos``, default 1 then 0): the same publishers publish the same
   number of readings as fast as they can. Stored readings come from the platform's counter
   ``iot_sink_readings_total{sink="storage"}`` (a reading counts once the time-series store has
   committed it, i.e. it is queryable), scraped from ``/metrics`` every 100 ms. Rate = stored
   readings / (the scrape that saw them all - first publish); points = readings x 5 metrics.
   After the run the embedded store's ``points`` table is counted to check that every point
   is really there.
5. **Latency.** ``--probes`` probe devices publish a reading every 100 ms in the same stream as
   the load (same broker and subscription, their own connection) while the phase lasts. For
   each probe device, ``GET /api/devices/{id}/data?from=<oldest probe not yet seen>&to=<now>``
   every 50 ms finds the probes that have become queryable. Latency = arrival of the answer
   that contains the probe - the moment just before it was published; an upper bound, by up to
   one poll interval. When saturated, the broker holds a backlog of the publishers' readings,
   so that latency is mostly the time to drain it; ``--paced`` (default 0.5) adds per QoS a
   phase of ``--paced-seconds`` in which the publishers publish at that fraction of the
   measured platform rate: the latency at a sustainable rate.
6. **Memory and CPU.** The platform's VmRSS is sampled from /proc every 50 ms: the peak of each
   phase, RSS against readings stored so far at each step, and VmHWM at the end. CPU per phase
   (from /proc and os.times): platform, broker, publishers, this process and everything else
   on the machine (other people's tests disturb a shared box: check "other processes").

7. **Rules** (``--rules``, default 1,000; 0 skips): three more phases of ``--messages`` readings
   at ``--rules-qos`` (default 1): without rules, with ``--rules`` rules (created over REST),
   and with the same rules disabled (PATCH). Each ends when storage *and* the rule engine have
   handled every reading (``iot_sink_readings_total{sink="storage"|"rules"}``). The rules never
   trip on the load (see ``rule_set``): five fleet-wide (glob, device type, tag) and the rest on
   slices of ten devices, so a reading meets about 6 of them. Cost = 1 - rate with rules / mean
   rate of the two phases without. With ``--paced``, a fourth phase runs the rules paced at that
   fraction of the rules-on rate, in which ``--alert-probes`` devices raise and clear alerts
   over and over; an SSE client on ``/api/alerts/stream`` times each reading that raised one to
   its ``raised`` notice (reading-to-alert latency; see ``AlertProber``).

``--stream kafka`` runs instead a comparison of streams (see ``stream_comparison``): the same
QoS 1 load, saturated then paced, through the in-process stream and through Kafka with one and
with two ``iot-platform worker --role storage`` processes, each setup a fresh platform on
InfluxDB with its own devices (1,000 unless ``--devices``); the workers' counters are scraped
from their ``--metrics-port`` (Prometheus' own server, not behind the API's authentication).

QoS 0: the publishers publish at QoS 0. The platform keeps its configured QoS 1 subscription,
so the broker delivers at min(0, 1) = 0: no PUBACK to the broker, no redelivery; a reading is
lost if the broker's queue limit is hit or the platform dies. The bare subscriber subscribes at 0.

Publishers: ``--publishers`` processes x ``--connections`` MQTT 3.1.1 connections on plain
sockets, PUBLISH packets encoded by hand so that the load generator costs little CPU (it sends
well above 50,000 msgs/s). Device i is published by connection i mod connections, round-robin
over its devices. Topic ``devices/{id}/telemetry``, payload
``{"message_id", "timestamp": epoch microseconds (strictly increasing per connection), "metrics":
{temperature, humidity, pressure, battery_level, co2}}``. At QoS 1 each connection keeps at most
``--window`` publishes unacknowledged.

Targets (from the issues): platform >= 50 % of the bare rate; >= 10,000 msgs/s end to end on the
embedded store; peak RSS < 300 MB with 10,000 devices, not growing with readings; 1,000 rules
cost under 30 % of the ingest rate.

Run from the repository root, with the services up (``tools/services.sh start``)::

    .venv/bin/python -m tools.bench_ingest                  # 10,000 devices, QoS 1 then 0
    .venv/bin/python -m tools.bench_ingest --devices 1000 --messages 50000 --qos 1 --paced 0
    .venv/bin/python -m tools.bench_ingest --store influxdb --devices 1000
    .venv/bin/python -m tools.bench_ingest --platform-env IOT_MQTT__PROTOCOL=3.1.1
    .venv/bin/python -m tools.bench_ingest --devices 100 --qos 1 --profile /tmp/platform.prof
    .venv/bin/python -m tools.bench_ingest --qos '' --paced 0     # only the rules comparison
    .venv/bin/python -m tools.bench_ingest --stream kafka         # in-process vs Kafka, 1 and 2 workers

Broker and InfluxDB come from ``IOT_TEST_MQTT_URL`` / ``IOT_TEST_INFLUX_*`` (else from
``tools/services.sh env``); ``--broker`` overrides the broker. ``--keep`` keeps the temp dir
(platform log, databases). Progress goes to stderr, the tables to stdout. A default run takes
about 5 minutes here, 2 to 2.5 of them registering 10,000 devices. Exit status 1 if the
platform could not be run or a step failed; missed targets are reported, not an error.
"""
