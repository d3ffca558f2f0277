ARG A=${B:-${C:-${D:-}}}
FROM $A
