package io.mqttlb.hivemq;

import com.hivemq.extension.sdk.api.events.client.ClientLifecycleEventListener;
import com.hivemq.extension.sdk.api.events.client.ClientLifecycleEventListenerProvider;
import com.hivemq.extension.sdk.api.events.client.parameters.AuthenticationSuccessfulInput;
import com.hivemq.extension.sdk.api.events.client.parameters.ConnectionStartInput;
import com.hivemq.extension.sdk.api.events.client.parameters.DisconnectEventInput;
import com.hivemq.extension.sdk.api.interceptor.publish.PublishInboundInterceptor;
import com.hivemq.extension.sdk.api.packets.general.MqttVersion;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.LongAdder;

/**
 * The clients connected to this node and their inbound PUBLISH load.
 * <p>
 * A client enters when its connection is authenticated and leaves when that connection ends (a session
 * take-over by a new connection keeps the new one). Each inbound PUBLISH adds 1 message and its payload
 * size in bytes. {@link #tick(double)} turns the totals into rates: an exponentially weighted moving
 * average with the configured time constant, in messages and payload bytes per second.
 */
final class ClientRegistry {

    /** One connection's facts and counters. Counters are thread-safe; rates are written by the ticker only. */
    static final class Client {
        final String clientId;
        final int protocol;
        final boolean persistent;
        final long connectedAtNanos = System.nanoTime();
        final LongAdder messagesIn = new LongAdder();
        final LongAdder bytesIn = new LongAdder();
        private long lastMessages;
        private long lastBytes;
        private volatile double messagesPerSecond;
        private volatile double bytesPerSecond;
        private boolean primed;

        Client(final String clientId, final int protocol, final boolean persistent) {
            this.clientId = clientId;
            this.protocol = protocol;
            this.persistent = persistent;
        }

        /** One row of {@code GET /mqttlb/v1/clients}. */
        ClientLoad load() {
            return new ClientLoad(clientId, messagesPerSecond, bytesPerSecond, persistent, protocol,
                    (System.nanoTime() - connectedAtNanos) / 1e9, messagesIn.sum(), bytesIn.sum());
        }

        private void tick(final double seconds, final double alpha) {
            final long messages = messagesIn.sum();
            final long bytes = bytesIn.sum();
            final double messageRate = (messages - lastMessages) / seconds;
            final double byteRate = (bytes - lastBytes) / seconds;
            // The first interval seeds the average, so a client does not start at zero.
            messagesPerSecond = primed ? messagesPerSecond + alpha * (messageRate - messagesPerSecond) : messageRate;
            bytesPerSecond = primed ? bytesPerSecond + alpha * (byteRate - bytesPerSecond) : byteRate;
            primed = true;
            lastMessages = messages;
            lastBytes = bytes;
        }
    }

    /**
     * What the eviction interface reports per client (JSON field names as in the extension's README).
     *
     * @param connectedSeconds seconds since the connection was authenticated
     * @param messagesIn       inbound PUBLISH packets since then
     * @param bytesIn          their payload bytes
     */
    record ClientLoad(String clientId, double messagesInPerSecond, double bytesInPerSecond, boolean persistent,
                      int protocol, double connectedSeconds, long messagesIn, long bytesIn) {
    }

    private final ConcurrentHashMap<String, Client> clients = new ConcurrentHashMap<>();
    private final double windowSeconds;

    ClientRegistry(final double windowSeconds) {
        this.windowSeconds = windowSeconds;
    }

    /** The connected client with this identifier, or null. */
    Client get(final String clientId) {
        return clients.get(clientId);
    }

    List<ClientLoad> loads() {
        final List<ClientLoad> result = new ArrayList<>(clients.size());
        clients.values().forEach(client -> result.add(client.load()));
        return result;
    }

    int size() {
        return clients.size();
    }

    /** Updates every client's rates; {@code seconds} is the time since the previous tick. Single caller. */
    void tick(final double seconds) {
        final double alpha = 1 - Math.exp(-seconds / windowSeconds);
        clients.values().forEach(client -> client.tick(seconds, alpha));
    }

    /** Counts each inbound PUBLISH and its payload bytes for the sending client. */
    PublishInboundInterceptor publishCounter() {
        return (input, output) -> {
            final Client client = clients.get(input.getClientInformation().getClientId());
            if (client != null) {
                client.messagesIn.increment();
                client.bytesIn.add(input.getPublishPacket().getPayload().map(p -> p.remaining()).orElse(0));
            }
        };
    }

    /** One listener per connection: it knows its own {@link Client}, so a take-over never removes the new one. */
    ClientLifecycleEventListenerProvider listeners() {
        return providerInput -> new ClientLifecycleEventListener() {
            private Client client;

            @Override
            public void onMqttConnectionStart(final ConnectionStartInput input) {
                // MQTT 3 clean session 0 arrives as the maximum session expiry, clean session 1 as 0.
                client = new Client(input.getClientInformation().getClientId(),
                        protocol(input.getConnectionInformation().getMqttVersion()),
                        input.getConnectPacket().getSessionExpiryInterval() > 0);
            }

            @Override
            public void onAuthenticationSuccessful(final AuthenticationSuccessfulInput input) {
                if (client != null) {
                    clients.put(client.clientId, client);
                }
            }

            @Override
            public void onDisconnect(final DisconnectEventInput input) {
                if (client != null) {
                    clients.remove(client.clientId, client);
                }
            }
        };
    }

    /** MQTT protocol level: 3 (3.1), 4 (3.1.1), 5. */
    static int protocol(final MqttVersion version) {
        return switch (version) {
            case V_3_1 -> 3;
            case V_3_1_1 -> 4;
            case V_5 -> 5;
        };
    }
}
