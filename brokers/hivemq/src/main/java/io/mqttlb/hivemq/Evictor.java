package io.mqttlb.hivemq;

import com.hivemq.extension.sdk.api.interceptor.disconnect.DisconnectOutboundInterceptor;
import com.hivemq.extension.sdk.api.packets.disconnect.DisconnectReasonCode;
import com.hivemq.extension.sdk.api.services.session.ClientService;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.locks.LockSupport;
import java.util.concurrent.locks.ReentrantLock;

/**
 * Disconnects a chosen set of clients at a bounded rate through HiveMQ's {@link ClientService}.
 * <p>
 * MQTT 5 clients receive a DISCONNECT with the command's reason code (0x9C "Use another server" by default)
 * and, for 0x9C and 0x9D, the Server Reference. MQTT 3 clients are simply disconnected (MQTT 3 has no
 * server DISCONNECT). Will messages are not sent: an evicted client is healthy and comes back elsewhere.
 * One command runs at a time; a command over a bound is refused whole and changes nothing. A command naming a
 * client that is not connected here, or one with a persistent session without {@code allowPersistent}, is not
 * carried out at all: the answer lists them and nobody is disconnected.
 */
final class Evictor {

    private static final Logger LOG = LoggerFactory.getLogger(Evictor.class);
    private static final long DISCONNECT_TIMEOUT_MS = 5_000;
    static final int DEFAULT_REASON_CODE = 0x9C;
    /** The server-side DISCONNECT reason codes a command may ask for (MQTT 5.0, 3.14.2.1; mqttlb's set). */
    static final Map<Integer, DisconnectReasonCode> REASON_CODES = Map.of(
            0x98, DisconnectReasonCode.ADMINISTRATIVE_ACTION,
            0x9C, DisconnectReasonCode.USE_ANOTHER_SERVER,
            0x9D, DisconnectReasonCode.SERVER_MOVED);

    /** A refusal of a whole command before it ran: HTTP status and the reason. Nothing was done. */
    static final class Refused extends Exception {
        final int status;

        Refused(final int status, final String message) {
            super(message, null, false, false);
            this.status = status;
        }
    }

    /**
     * A checked eviction command.
     *
     * @param clients         client identifiers, duplicates removed, in the order given
     * @param maxPerSecond    disconnects per second, at most the configured bound
     * @param reasonCode      one of {@link #REASON_CODES}
     * @param serverReference Server Reference for 0x9C/0x9D, or null for none
     */
    record Command(List<String> clients, double maxPerSecond, int reasonCode, String serverReference,
                   boolean allowPersistent) {
    }

    /**
     * The answer: disconnected now; not connected here (before the run: nothing done; during it: left by
     * itself); refused (persistent without opt-in: nothing done; during the run: the disconnect failed).
     */
    record Result(List<String> evicted, List<String> unknown, List<String> refused, String reason) {
    }

    private final ClientService clientService;
    private final ClientRegistry registry;
    private final ExtensionConfig config;
    private final ExtensionMetrics metrics;
    private final ReentrantLock running = new ReentrantLock();
    private final ConcurrentHashMap<String, String> pendingReferences = new ConcurrentHashMap<>();

    Evictor(final ClientService clientService, final ClientRegistry registry, final ExtensionConfig config,
            final ExtensionMetrics metrics) {
        this.clientService = clientService;
        this.registry = registry;
        this.config = config;
        this.metrics = metrics;
    }

    /**
     * Checks a command against the bounds.
     *
     * @throws Refused 400 for a malformed value, 422 for a value over a configured bound
     */
    Command check(final List<String> clients, final Double maxPerSecond, final Integer reasonCode,
                  final String serverReference, final Boolean allowPersistent) throws Refused {
        if (clients == null || clients.isEmpty()) {
            throw new Refused(400, "clients: a non-empty list of client identifiers is required");
        }
        for (final String id : clients) {
            if (id == null || id.isEmpty()) {
                throw new Refused(400, "clients: every entry must be a non-empty string");
            }
        }
        final List<String> unique = List.copyOf(new LinkedHashSet<>(clients));
        if (maxPerSecond == null || !Double.isFinite(maxPerSecond) || maxPerSecond <= 0) {
            throw new Refused(400, "maxPerSecond: a number > 0 is required");
        }
        final int code = reasonCode == null ? DEFAULT_REASON_CODE : reasonCode;
        if (!REASON_CODES.containsKey(code)) {
            throw new Refused(400, "reasonCode: must be 152, 156 or 157 (0x98, 0x9C, 0x9D)");
        }
        if (serverReference != null && (serverReference.isBlank() || serverReference.length() > 1024)) {
            throw new Refused(400, "serverReference: 1 to 1024 characters");
        }
        if (unique.size() > config.evictMaxClients()) {
            throw new Refused(422, "clients: " + unique.size() + " is over the bound of " + config.evictMaxClients());
        }
        if (maxPerSecond > config.evictMaxPerSecond()) {
            throw new Refused(422, "maxPerSecond: " + maxPerSecond + " is over the bound of " + config.evictMaxPerSecond());
        }
        if (unique.size() / maxPerSecond > config.evictMaxSeconds()) {
            throw new Refused(422, "clients / maxPerSecond: " + unique.size() / maxPerSecond
                    + " s is over the bound of " + config.evictMaxSeconds() + " s");
        }
        final String reference = serverReference != null ? serverReference : config.serverReference();
        return new Command(unique, maxPerSecond, code, reference, Boolean.TRUE.equals(allowPersistent));
    }

    /**
     * Runs a checked command; returns when every chosen client has been handled.
     *
     * @throws Refused 409 when another command is running (this one then did nothing)
     */
    Result run(final Command command) throws Refused {
        if (!running.tryLock()) {
            throw new Refused(409, "another eviction command is running");
        }
        final long started = System.nanoTime();
        try {
            final List<String> unknown = new ArrayList<>();
            final List<String> refused = new ArrayList<>();
            for (final String id : command.clients()) {
                final ClientRegistry.Client client = registry.get(id);
                if (client == null) {
                    unknown.add(id);
                } else if (client.persistent && !command.allowPersistent()) {
                    refused.add(id);
                }
            }
            if (!unknown.isEmpty() || !refused.isEmpty()) {
                // A command is carried out whole or not at all.
                final String reason = "nothing done: " + unknown.size() + " not connected here, " + refused.size()
                        + " with a persistent session and allowPersistent false";
                LOG.info("mqttlb eviction: {}", reason);
                return new Result(List.of(), unknown, refused, reason);
            }
            final List<String> evicted = new ArrayList<>();
            final long intervalNanos = (long) (1e9 / command.maxPerSecond());
            long next = System.nanoTime();
            String failure = null;
            for (final String id : command.clients()) {
                final long start = Math.max(next, System.nanoTime());
                sleepUntil(start);
                next = start + intervalNanos;
                final String outcome = disconnect(id, command);
                if (outcome == null) {
                    evicted.add(id);
                } else if (outcome.isEmpty()) {
                    unknown.add(id); // left by itself while the batch ran
                } else {
                    refused.add(id);
                    failure = outcome;
                }
            }
            metrics.evicted(evicted.size(), System.nanoTime() - started);
            String reason = evicted.size() + " evicted, " + unknown.size() + " left by themselves";
            if (failure != null) {
                reason += ", " + refused.size() + " failed (last: " + failure + ")";
            }
            LOG.info("mqttlb eviction: {} (reason code 0x{}, {}/s)", reason, Integer.toHexString(command.reasonCode()),
                    command.maxPerSecond());
            return new Result(evicted, unknown, refused, reason);
        } finally {
            running.unlock();
        }
    }

    /** Sets the Server Reference on the DISCONNECT of a client this evictor is moving (0x9C/0x9D only). */
    DisconnectOutboundInterceptor serverReferenceInterceptor() {
        return (input, output) -> {
            final String reference = pendingReferences.get(input.getClientInformation().getClientId());
            final DisconnectReasonCode code = output.getDisconnectPacket().getReasonCode();
            if (reference != null && (code == DisconnectReasonCode.USE_ANOTHER_SERVER
                    || code == DisconnectReasonCode.SERVER_MOVED)) {
                output.getDisconnectPacket().setServerReference(reference);
            }
        };
    }

    /** null: disconnected; "": no such client any more; otherwise the failure. */
    private String disconnect(final String id, final Command command) {
        if (command.serverReference() != null) {
            pendingReferences.put(id, command.serverReference());
        }
        try {
            final Boolean found = clientService.disconnectClient(id, true, REASON_CODES.get(command.reasonCode()),
                    "mqttlb: moved to another server").get(DISCONNECT_TIMEOUT_MS, TimeUnit.MILLISECONDS);
            return Boolean.TRUE.equals(found) ? null : "";
        } catch (final ExecutionException e) {
            LOG.warn("mqttlb eviction: disconnecting {} failed: {}", id, e.getCause().toString());
            return "disconnect failed: " + e.getCause().getClass().getSimpleName();
        } catch (final TimeoutException e) {
            return "disconnect not confirmed within " + DISCONNECT_TIMEOUT_MS + " ms";
        } catch (final InterruptedException e) {
            Thread.currentThread().interrupt();
            return "interrupted";
        } finally {
            pendingReferences.remove(id);
        }
    }

    private static void sleepUntil(final long deadlineNanos) {
        for (long left = deadlineNanos - System.nanoTime(); left > 0; left = deadlineNanos - System.nanoTime()) {
            LockSupport.parkNanos(left);
        }
    }
}
