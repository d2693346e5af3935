package io.mqttlb.hivemq;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Settings of the mqttlb extension, checked once when built.
 *
 * @param bindAddress        address of the extension's HTTP server (metrics, availability, eviction)
 * @param httpPort           its TCP port (0 picks a free one)
 * @param metricPath         path of the Prometheus text, like the official extension's {@code metric_path}
 * @param token              bearer token that every state-changing or client-listing request must carry
 * @param evictMaxPerSecond  upper bound of an eviction command's {@code maxPerSecond} (clients per second)
 * @param evictMaxClients    upper bound of the number of clients in one eviction command
 * @param evictMaxSeconds    upper bound of one command's duration, {@code clients / maxPerSecond}, in seconds
 * @param serverReference    MQTT 5 Server Reference sent with 0x9C/0x9D when a command names none; may be null
 * @param loadWindowSeconds  time constant of the per-client inbound rate (EWMA), in seconds
 * @param sharedSessions     true only when sessions survive a move (a HiveMQ Enterprise cluster); CE: false
 * @throws IllegalArgumentException when a value is out of range, with the setting's name in the message
 */
public record ExtensionConfig(
        String bindAddress,
        int httpPort,
        String metricPath,
        String token,
        double evictMaxPerSecond,
        int evictMaxClients,
        double evictMaxSeconds,
        String serverReference,
        double loadWindowSeconds,
        boolean sharedSessions) {

    public ExtensionConfig {
        require(bindAddress != null && !bindAddress.isBlank(), "bind address must not be empty");
        require(httpPort >= 0 && httpPort <= 65535, "http port must be 0..65535, got " + httpPort);
        require(metricPath != null && metricPath.startsWith("/") && !metricPath.startsWith(HttpApi.API_PREFIX),
                "metric path must start with / and not with " + HttpApi.API_PREFIX + ", got " + metricPath);
        require(token != null && !token.isBlank(), "token must not be empty");
        require(positive(evictMaxPerSecond), "evict max per second must be > 0, got " + evictMaxPerSecond);
        require(evictMaxClients > 0, "evict max clients must be > 0, got " + evictMaxClients);
        require(positive(evictMaxSeconds), "evict max seconds must be > 0, got " + evictMaxSeconds);
        require(serverReference == null || !serverReference.isBlank(), "server reference must not be blank");
        require(positive(loadWindowSeconds), "load window seconds must be > 0, got " + loadWindowSeconds);
    }

    /**
     * The token in a file: its content without surrounding white space.
     *
     * @throws IOException              when the file cannot be read
     * @throws IllegalArgumentException when it holds only white space
     */
    public static String readToken(final Path file) throws IOException {
        final String token = Files.readString(file, StandardCharsets.UTF_8).strip();
        require(!token.isEmpty(), "token file " + file + " is empty");
        return token;
    }

    private static boolean positive(final double value) {
        return Double.isFinite(value) && value > 0;
    }

    private static void require(final boolean condition, final String message) {
        if (!condition) {
            throw new IllegalArgumentException(message);
        }
    }
}
