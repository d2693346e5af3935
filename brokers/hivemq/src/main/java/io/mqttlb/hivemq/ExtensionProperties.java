package io.mqttlb.hivemq;

import java.io.IOException;
import java.io.Reader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;

/**
 * The extension's settings when HiveMQ loads it from its extension folder ({@link MqttlbExtensionMain}):
 * {@code <extension folder>/conf/config.properties}, keys as in the official Prometheus extension's
 * ({@code ip}, {@code port}, {@code metric_path}) plus the mqttlb ones. Every key but {@code token_file} has
 * a default; a relative {@code token_file} is resolved against the extension folder.
 *
 * <table>
 *   <caption>keys</caption>
 *   <tr><td>{@code ip}</td><td>0.0.0.0</td><td>address of the HTTP server</td></tr>
 *   <tr><td>{@code port}</td><td>9399</td><td>its port (the official extension's default: use another one
 *       when both run)</td></tr>
 *   <tr><td>{@code metric_path}</td><td>/metrics</td><td>path of the Prometheus text</td></tr>
 *   <tr><td>{@code token_file}</td><td>required</td><td>file holding the API's bearer token</td></tr>
 *   <tr><td>{@code evict_max_per_second}, {@code evict_max_clients}, {@code evict_max_seconds}</td>
 *       <td>100, 1000, 60</td><td>bounds of one eviction command</td></tr>
 *   <tr><td>{@code server_reference}</td><td>none</td><td>MQTT 5 Server Reference sent with 0x9C/0x9D</td></tr>
 *   <tr><td>{@code load_window_seconds}</td><td>10</td><td>time constant of the per-client rates</td></tr>
 *   <tr><td>{@code shared_sessions}</td><td>false</td><td>true on a HiveMQ Enterprise cluster (sessions survive
 *       a move)</td></tr>
 * </table>
 */
public final class ExtensionProperties {

    /** The settings file, relative to the extension folder. */
    public static final String FILE = "conf/config.properties";

    static final Set<String> KEYS = Set.of("ip", "port", "metric_path", "token_file", "evict_max_per_second",
            "evict_max_clients", "evict_max_seconds", "server_reference", "load_window_seconds", "shared_sessions");

    private ExtensionProperties() {
    }

    /**
     * The settings of the extension in {@code extensionHome}.
     *
     * @throws IOException              when the settings file or the token file cannot be read
     * @throws IllegalArgumentException for an unknown key, a value that is not a number or boolean, a missing
     *                                  {@code token_file} or a value out of range (the message names the key)
     */
    public static ExtensionConfig load(final Path extensionHome) throws IOException {
        final Path file = extensionHome.resolve(FILE);
        final Properties properties = new Properties();
        try (Reader reader = Files.newBufferedReader(file, StandardCharsets.UTF_8)) {
            properties.load(reader);
        }
        final Set<String> unknown = new TreeSet<>(properties.stringPropertyNames());
        unknown.removeAll(KEYS);
        if (!unknown.isEmpty()) {
            throw new IllegalArgumentException(file + ": unknown key(s) " + unknown + ", known: " + new TreeSet<>(KEYS));
        }
        final String tokenFile = value(properties, "token_file", null);
        if (tokenFile == null) {
            throw new IllegalArgumentException(file + ": token_file is required");
        }
        try {
            return new ExtensionConfig(
                    value(properties, "ip", "0.0.0.0"),
                    Integer.parseInt(value(properties, "port", "9399")),
                    value(properties, "metric_path", "/metrics"),
                    ExtensionConfig.readToken(extensionHome.resolve(tokenFile)),
                    Double.parseDouble(value(properties, "evict_max_per_second", "100")),
                    Integer.parseInt(value(properties, "evict_max_clients", "1000")),
                    Double.parseDouble(value(properties, "evict_max_seconds", "60")),
                    value(properties, "server_reference", null),
                    Double.parseDouble(value(properties, "load_window_seconds", "10")),
                    bool(properties, "shared_sessions"));
        } catch (final NumberFormatException e) {
            throw new IllegalArgumentException(file + ": not a number: " + e.getMessage(), e);
        } catch (final IllegalArgumentException e) {
            throw new IllegalArgumentException(file + ": " + e.getMessage(), e);
        }
    }

    private static String value(final Properties properties, final String key, final String fallback) {
        final String value = properties.getProperty(key);
        return value == null || value.isBlank() ? fallback : value.strip();
    }

    private static boolean bool(final Properties properties, final String key) {
        final String value = value(properties, key, "false");
        if (!value.equals("true") && !value.equals("false")) {
            throw new IllegalArgumentException(key + " must be true or false, got " + value);
        }
        return Boolean.parseBoolean(value);
    }
}
